//! HTTP Basic authentication with a cache of verified credentials.
//!
//! Every WebDAV request carries the user name and password, and checking an argon2 hash
//! takes tens of milliseconds, so verified credentials are remembered for `auth_cache_ttl`
//! seconds. The cache key is the user name plus a salted SHA-256 of the password, so that
//! the password itself is not kept. A hit also requires that the user record is still the one
//! that was verified: a reload of the users file or a changed password hash forces a full
//! check. Each cache entry keeps one counted session of the user open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ferry_users::{LoginContext, LoginError, Logins, Session};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The credentials in a request's `Authorization` header.
#[derive(PartialEq, Eq)]
pub(crate) enum Credentials {
    /// No header, or a scheme other than Basic, which this server does not offer.
    Missing,
    /// A Basic header whose value is not base64 of UTF-8 `user:password`.
    Malformed,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Missing => f.write_str("no credentials"),
            Credentials::Malformed => f.write_str("malformed Basic credentials"),
            Credentials::Basic { username, .. } => write!(f, "Basic credentials of {username:?}"),
        }
    }
}

impl std::fmt::Debug for Credentials {
    /// Shows the user name only; the password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Decodes base64 with or without padding; clients differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Credentials {
    /// Reads the first `Authorization` header of a request.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Credentials::Missing;
        };
        let Ok(value) = value.to_str() else {
            return Credentials::Malformed;
        };
        let value = value.trim();
        let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Credentials::Missing;
        }
        let Ok(decoded) = BASE64.decode(encoded.trim()) else {
            return Credentials::Malformed;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Credentials::Malformed;
        };
        match text.split_once(':') {
            Some((username, password)) => Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            },
            None => Credentials::Malformed,
        }
    }
}

/// Checks credentials and caches the verified ones.
pub(crate) struct Authenticator {
    logins: Logins,
    ttl: Duration,
    /// Random per process, so cache keys cannot be precomputed from password lists.
    salt: [u8; 32],
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    username: String,
    password_digest: [u8; 32],
}

/// One set of credentials. Its async mutex makes concurrent requests with the same new
/// credentials (clients open several connections at once) wait for one verification
/// instead of each running the hash and reporting a login of its own.
#[derive(Default)]
struct Slot {
    verified: tokio::sync::Mutex<Option<Verified>>,
}

struct Verified {
    session: Arc<Session>,
    /// The stored hash that the password matched.
    password_hash: Option<String>,
    verified_at: Instant,
}

impl Authenticator {
    pub(crate) fn new(logins: Logins, ttl: Duration) -> Authenticator {
        Authenticator {
            logins,
            ttl,
            salt: rand::random(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<SlotKey, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, username: &str, password: &str) -> SlotKey {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(password.as_bytes());
        SlotKey {
            username: username.to_owned(),
            password_digest: hasher.finalize().into(),
        }
    }

    /// Returns the session for these credentials. A cache hit reports nothing unless the
    /// account rules now refuse the login; a full check reports its outcome as one login
    /// event through [`Logins::login_with_password`].
    pub(crate) async fn authenticate(
        &self,
        username: &str,
        password: &str,
        context: &LoginContext,
        connection_id: &str,
    ) -> Result<Arc<Session>, LoginError> {
        let key = self.key(username, password);
        let slot = Arc::clone(self.lock_slots().entry(key.clone()).or_default());
        let mut verified = slot.verified.lock().await;

        if let Some(entry) = verified.as_ref()
            && self.still_valid(entry, username)
        {
            let session = Arc::clone(&entry.session);
            if let Err(denied) = self.logins.store().authorize(&session.user, context) {
                let error = LoginError::Denied(denied);
                self.logins
                    .report(username, context, connection_id, Some(&error));
                *verified = None;
                drop(verified);
                self.forget(&key, &slot);
                return Err(error);
            }
            return Ok(session);
        }

        // Release the old session first, so that it does not count against max_sessions
        // while the new one opens.
        *verified = None;
        let result = self
            .logins
            .login_with_password(username, password, context, connection_id)
            .await;
        match result {
            Ok(session) => {
                let session = Arc::new(session);
                if !self.ttl.is_zero() {
                    *verified = Some(Verified {
                        password_hash: stored_hash(&session),
                        session: Arc::clone(&session),
                        verified_at: Instant::now(),
                    });
                }
                Ok(session)
            }
            Err(error) => {
                drop(verified);
                self.forget(&key, &slot);
                Err(error)
            }
        }
    }

    /// Returns whether a cache entry is still valid for `username`: it is younger than the TTL
    /// and the users file still contains the very record, with the same hash, that was checked.
    fn still_valid(&self, entry: &Verified, username: &str) -> bool {
        if entry.verified_at.elapsed() >= self.ttl {
            return false;
        }
        let Some(current) = self.logins.store().get(username) else {
            return false;
        };
        let current_hash = current.password.as_ref().map(|p| p.as_str().to_owned());
        Arc::ptr_eq(&current, &entry.session.user) && current_hash == entry.password_hash
    }

    fn forget(&self, key: &SlotKey, slot: &Arc<Slot>) {
        let mut slots = self.lock_slots();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    /// Drops expired entries, which ends their sessions.
    pub(crate) fn purge_expired(&self) {
        self.lock_slots()
            .retain(|_, slot| match slot.verified.try_lock() {
                Ok(state) => state
                    .as_ref()
                    .is_some_and(|entry| entry.verified_at.elapsed() < self.ttl),
                // A verification is running; its request owns the entry.
                Err(_) => true,
            });
    }
}

fn stored_hash(session: &Session) -> Option<String> {
    session
        .user
        .password
        .as_ref()
        .map(|p| p.as_str().to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn basic_decoded() {
        // "alice:pa:ss" with the colon inside the password kept.
        let creds = Credentials::from_headers(&headers("Basic YWxpY2U6cGE6c3M="));
        assert_eq!(
            creds,
            Credentials::Basic {
                username: "alice".into(),
                password: "pa:ss".into()
            }
        );
    }

    #[test]
    fn scheme_case_and_padding_ignored() {
        let creds = Credentials::from_headers(&headers("basic YWxpY2U6cGE6c3M"));
        assert!(matches!(creds, Credentials::Basic { .. }), "{creds}");
    }

    #[test]
    fn missing_and_other_schemes() {
        assert_eq!(
            Credentials::from_headers(&HeaderMap::new()),
            Credentials::Missing
        );
        assert_eq!(
            Credentials::from_headers(&headers("Bearer abc")),
            Credentials::Missing
        );
    }

    #[test]
    fn malformed_basic() {
        assert_eq!(
            Credentials::from_headers(&headers("Basic !!!")),
            Credentials::Malformed
        );
        // "alice" without a colon.
        assert_eq!(
            Credentials::from_headers(&headers("Basic YWxpY2U=")),
            Credentials::Malformed
        );
        assert_eq!(
            Credentials::from_headers(&headers("Basic")),
            Credentials::Malformed
        );
    }

    #[test]
    fn display_hides_password() {
        let creds = Credentials::Basic {
            username: "alice".into(),
            password: "secret".into(),
        };
        assert!(!creds.to_string().contains("secret"));
        assert!(!format!("{creds:?}").contains("secret"));
    }
}
