//! Authentication of one connection: which methods are offered, which attempts count, and
//! the login event each attempt produces.
//!
//! russh calls into [`Authenticator`] for every `USERAUTH_REQUEST`. The rules:
//!
//! - The `none` probe, an accepted public key probe (answered with `PK_OK`) and the start of
//!   keyboard-interactive are not attempts and produce no event.
//! - Every other request is one attempt with one event under the user name it carried: a
//!   rejected public key (probe or signed request) is a failed `publickey` event, a checked
//!   password or keyboard-interactive answer is an event with its outcome.
//! - A user whose key is accepted but who must also give a password gets partial success and
//!   no event; the second step is reported once, as `publickey+password` or
//!   `publickey+keyboard-interactive`. A second factor sent without an accepted key is
//!   reported under the method the client used and fails.
//! - After `max_auth_tries` failed attempts the connection is closed.
//!
//! Every rejection names the same methods whatever the user name, so replies do not reveal
//! which users exist.
//!
//! NOTE: russh 0.65 ignores a SERVICE_REQUEST once authentication has started. paramiko's
//! default `Transport` sends one before every attempt, so it gets a reply to its first
//! attempt only; `ServiceRequestingTransport` and OpenSSH send it once and are not affected.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ferry_hooks::{LoginMethod, Protocol};
use ferry_users::{Denied, LoginContext, LoginError, Logins, Session, User};
use russh::keys::{Algorithm, Certificate, PublicKey};
use russh::server::{Auth, Response};
use russh::{MethodKind, MethodSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::MethodPolicy;

/// The only keyboard-interactive prompt; its answer is checked as the user's password.
const PASSWORD_PROMPT: &str = "Password: ";

/// Authentication progress shared between the russh handler and the task that supervises
/// the connection.
#[derive(Debug, Default)]
pub(crate) struct AuthProgress {
    attempts: AtomicU32,
    failures: AtomicU32,
    authenticated: AtomicBool,
    /// Cancelled when the failures reach the limit.
    exhausted: CancellationToken,
}

impl AuthProgress {
    /// Returns whether any attempt was made, failed, partial or successful.
    pub(crate) fn attempted(&self) -> bool {
        self.attempts.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Completes when the connection has used up its failed attempts.
    pub(crate) fn exhausted(&self) -> &CancellationToken {
        &self.exhausted
    }
}

/// Why an authentication request ended the session instead of getting a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyFailures;

/// A user whose public key was accepted as the first of two steps.
#[derive(Debug)]
struct FirstStep {
    username: String,
    /// The second-step methods this user may use now.
    next: MethodSet,
}

/// Checks the authentication requests of one connection and reports each attempt.
pub(crate) struct Authenticator {
    logins: Logins,
    policy: MethodPolicy,
    max_failures: u32,
    ip: IpAddr,
    connection_id: String,
    progress: Arc<AuthProgress>,
    first_step: Option<FirstStep>,
    session: Option<Session>,
}

impl Authenticator {
    pub(crate) fn new(
        logins: Logins,
        policy: MethodPolicy,
        max_failures: u32,
        ip: IpAddr,
        connection_id: String,
        progress: Arc<AuthProgress>,
    ) -> Authenticator {
        Authenticator {
            logins,
            policy,
            max_failures,
            ip,
            connection_id,
            progress,
            first_step: None,
            session: None,
        }
    }

    /// The logged-in user's session, once authentication succeeded.
    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Refuses every request once the failures reached the limit; the supervising task is
    /// closing the connection by then.
    fn check_exhausted(&self) -> Result<(), TooManyFailures> {
        if self.progress.exhausted.is_cancelled() {
            Err(TooManyFailures)
        } else {
            Ok(())
        }
    }

    /// Returns the methods a client may try first: a public key when any key method is
    /// allowed, then password and keyboard-interactive.
    fn initial_methods(&self) -> MethodSet {
        let mut methods = MethodSet::empty();
        if self.policy.allows_any_publickey() {
            methods.push(MethodKind::PublicKey);
        }
        if self.policy.allows(LoginMethod::Password) {
            methods.push(MethodKind::Password);
        }
        if self.policy.allows(LoginMethod::KeyboardInteractive) {
            methods.push(MethodKind::KeyboardInteractive);
        }
        methods
    }

    /// Returns the methods to advertise to `username` now.
    fn methods_for(&self, username: &str) -> MethodSet {
        match &self.first_step {
            Some(step) if step.username == username => step.next.clone(),
            _ => self.initial_methods(),
        }
    }

    /// Returns whether `username` already passed the first of two steps.
    fn passed_first_step(&self, username: &str) -> bool {
        self.first_step
            .as_ref()
            .is_some_and(|step| step.username == username)
    }

    /// A rejection that keeps every method the user may still try, so that a wrong password
    /// can be retried within the attempt limit.
    fn reject(&self, username: &str) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods_for(username)),
            partial_success: false,
        }
    }

    fn context(&self, method: LoginMethod) -> LoginContext {
        LoginContext {
            ip: self.ip,
            protocol: Protocol::Ssh,
            method,
        }
    }

    /// Reports a failed attempt and counts it; closes the connection at the limit.
    fn fail(&mut self, username: &str, method: LoginMethod, error: &LoginError) -> Auth {
        let context = self.context(method);
        self.logins
            .report(username, &context, &self.connection_id, Some(error));
        self.count_failure();
        self.reject(username)
    }

    /// Counts a failed attempt that was already reported.
    fn count_failure(&mut self) {
        self.progress.attempts.fetch_add(1, Ordering::Relaxed);
        let failures = self.progress.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.max_failures {
            info!(
                failures,
                connection_id = %self.connection_id,
                "too many failed authentication attempts; closing the connection"
            );
            self.progress.exhausted.cancel();
        }
    }

    /// Records a successful login that was already reported.
    fn succeed(&mut self, session: Session, method: LoginMethod) -> Auth {
        self.progress.attempts.fetch_add(1, Ordering::Relaxed);
        self.progress.authenticated.store(true, Ordering::Relaxed);
        let span = tracing::Span::current();
        span.record("user", session.user.username.as_str());
        span.record("method", method.as_str());
        self.first_step = None;
        self.session = Some(session);
        Auth::Accept
    }

    /// Handles the `none` method, which clients send to learn the allowed methods.
    pub(crate) fn none(&mut self, username: &str) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        debug!(user = username, "none method rejected");
        Ok(self.reject(username))
    }

    /// Handles a public key before its signature is checked: a probe, or the first look at
    /// a signed request. Accepting is not an event; rejecting is a failed attempt.
    pub(crate) fn publickey_offered(
        &mut self,
        username: &str,
        key: &PublicKey,
        algorithm: &Algorithm,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        let method = LoginMethod::PublicKey;
        if *algorithm == (Algorithm::Rsa { hash: None }) {
            debug!(
                user = username,
                "ssh-rsa signatures use SHA-1 and are not accepted; rsa-sha2-256 and \
                 rsa-sha2-512 are"
            );
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        }
        if !self.policy.allows_any_publickey() {
            debug!(
                user = username,
                "public key logins are disabled on this server"
            );
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        }
        let Some(user) = self.authorized_user(username, key) else {
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        };
        if !self.key_may_log_in(&user) {
            let error = LoginError::Denied(Denied::MethodNotAllowed);
            return Ok(self.fail(username, method, &error));
        }
        // NOTE: after an accepted probe, russh checks the signature of the signed request
        // without calling the handler again, so a bad signature there is rejected with no
        // event. Clients sign with the key they probed, so this takes a broken client.
        debug!(user = username, %algorithm, "public key accepted for signing");
        Ok(Auth::Accept)
    }

    /// Handles a public key whose signature russh verified.
    pub(crate) async fn publickey_verified(
        &mut self,
        username: &str,
        key: &PublicKey,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        let method = LoginMethod::PublicKey;
        let Some(user) = self.authorized_user(username, key) else {
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        };

        if self.policy.allows(method) && user.allows_method(method) {
            let context = self.context(method);
            let result = self.logins.open_session(user, &context).await;
            self.logins.report(
                username,
                &context,
                &self.connection_id,
                result.as_ref().err(),
            );
            return Ok(match result {
                Ok(session) => self.succeed(session, method),
                Err(_) => {
                    self.count_failure();
                    self.reject(username)
                }
            });
        }

        let next = self.second_steps(&user);
        if next.is_empty() {
            let error = LoginError::Denied(Denied::MethodNotAllowed);
            return Ok(self.fail(username, method, &error));
        }
        info!(
            user = username,
            "public key accepted; the login needs a second factor"
        );
        self.progress.attempts.fetch_add(1, Ordering::Relaxed);
        self.first_step = Some(FirstStep {
            username: username.to_owned(),
            next: next.clone(),
        });
        Ok(Auth::Reject {
            proceed_with_methods: Some(next),
            partial_success: true,
        })
    }

    /// Handles an OpenSSH certificate, which this server does not accept.
    pub(crate) fn certificate(
        &mut self,
        username: &str,
        certificate: &Certificate,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        debug!(
            user = username,
            key_id = certificate.key_id(),
            "OpenSSH certificates are not accepted"
        );
        Ok(self.fail(
            username,
            LoginMethod::PublicKey,
            &LoginError::InvalidCredentials,
        ))
    }

    /// Handles the `password` method, alone or as the second step after a key.
    pub(crate) async fn password(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        let method = if self.passed_first_step(username) {
            LoginMethod::PublicKeyAndPassword
        } else {
            LoginMethod::Password
        };
        Ok(self.check_password(username, password, method).await)
    }

    /// Starts keyboard-interactive: sends the password prompt, or rejects the method when
    /// it is disabled on this server (a failed attempt).
    pub(crate) fn keyboard_interactive_start(
        &mut self,
        username: &str,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        let method = self.keyboard_interactive_method(username);
        if !self.policy.allows(method) {
            debug!(user = username, %method, "login method disabled on this server");
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        }
        Ok(Auth::Partial {
            name: Cow::Borrowed(""),
            instructions: Cow::Borrowed(""),
            prompts: Cow::Owned(vec![(Cow::Borrowed(PASSWORD_PROMPT), false)]),
        })
    }

    /// Checks the answer to the keyboard-interactive password prompt.
    pub(crate) async fn keyboard_interactive_answer(
        &mut self,
        username: &str,
        response: Response<'_>,
    ) -> Result<Auth, TooManyFailures> {
        self.check_exhausted()?;
        let method = self.keyboard_interactive_method(username);
        let answers: Vec<_> = response.take(2).collect();
        let password = match answers.as_slice() {
            [answer] => std::str::from_utf8(answer).ok().map(str::to_owned),
            _ => None,
        };
        let Some(password) = password else {
            debug!(
                user = username,
                answers = answers.len(),
                "keyboard-interactive response is not one UTF-8 answer"
            );
            return Ok(self.fail(username, method, &LoginError::InvalidCredentials));
        };
        Ok(self.check_password(username, &password, method).await)
    }

    fn keyboard_interactive_method(&self, username: &str) -> LoginMethod {
        if self.passed_first_step(username) {
            LoginMethod::PublicKeyAndKeyboardInteractive
        } else {
            LoginMethod::KeyboardInteractive
        }
    }

    /// Checks a password for `method` and reports the attempt. The hash is checked even when
    /// the method is disabled for the user, so that the reply time does not tell whether the
    /// user exists.
    async fn check_password(
        &mut self,
        username: &str,
        password: &str,
        method: LoginMethod,
    ) -> Auth {
        if !self.policy.allows(method) {
            debug!(user = username, %method, "login method disabled on this server");
            return self.fail(username, method, &LoginError::InvalidCredentials);
        }
        let context = self.context(method);
        let result = self
            .logins
            .login_with_password(username, password, &context, &self.connection_id)
            .await;
        match result {
            Ok(session) => self.succeed(session, method),
            Err(_) => {
                self.count_failure();
                self.reject(username)
            }
        }
    }

    /// Returns the user when `key` is one of their authorized keys.
    fn authorized_user(&self, username: &str, key: &PublicKey) -> Option<Arc<User>> {
        let blob = key.to_bytes().ok()?;
        self.logins.store().verify_public_key(username, &blob)
    }

    /// Returns whether a key can log `user` in, alone or followed by a second factor.
    fn key_may_log_in(&self, user: &User) -> bool {
        (self.policy.allows(LoginMethod::PublicKey) && user.allows_method(LoginMethod::PublicKey))
            || !self.second_steps(user).is_empty()
    }

    /// Returns the methods that may follow an accepted key for `user`.
    fn second_steps(&self, user: &User) -> MethodSet {
        let mut methods = MethodSet::empty();
        let allowed = |method| self.policy.allows(method) && user.allows_method(method);
        if allowed(LoginMethod::PublicKeyAndPassword) {
            methods.push(MethodKind::Password);
        }
        if allowed(LoginMethod::PublicKeyAndKeyboardInteractive) {
            methods.push(MethodKind::KeyboardInteractive);
        }
        methods
    }
}
