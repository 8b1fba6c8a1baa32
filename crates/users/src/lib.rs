//! User accounts: the users file, credential checks, and the rules that decide whether a
//! verified user may log in now.
//!
//! A login takes two steps in every protocol. First the credential is checked
//! ([`UserStore::verify_password`], [`User::has_public_key`]); then
//! [`UserStore::authorize`] applies the account rules (disabled, expired, client address,
//! protocol, login method) and [`UserStore::open_session`] the session limit. Callers tell
//! the client only that the login failed and log the [`Denied`] reason for the operator.

mod file;
mod keys;
mod login;
mod password;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use ferry_hooks::{LoginMethod, Protocol};

pub use file::{User, parse_net};
pub use keys::AuthorizedKey;
pub use login::{LoginError, Logins, Session};
pub use password::{StoredPassword, hash_password};

/// Errors loading the users file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid users file {}:\n  {}", path.display(), problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Why a user with valid credentials may not log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    #[error("account disabled")]
    Disabled,
    #[error("account expired")]
    Expired,
    #[error("client address not allowed for this user")]
    AddressNotAllowed,
    #[error("protocol denied for this user")]
    ProtocolDenied,
    #[error("login method not allowed for this user")]
    MethodNotAllowed,
    #[error("too many concurrent sessions")]
    TooManySessions,
}

/// Where a login comes from and how it authenticated.
#[derive(Clone, Copy, Debug)]
pub struct LoginContext {
    pub ip: IpAddr,
    pub protocol: Protocol,
    pub method: LoginMethod,
}

/// The users, reloadable while the server runs.
pub struct UserStore {
    path: PathBuf,
    users: RwLock<Arc<HashMap<String, Arc<User>>>>,
    sessions: Arc<Mutex<HashMap<String, u32>>>,
    /// A real hash, checked when the user name is unknown so that the reply takes as long
    /// as for a known user and does not reveal which names exist.
    decoy: StoredPassword,
}

impl UserStore {
    /// Loads the users file; home directories given as relative paths are taken from the
    /// file's folder.
    pub fn load(path: &Path) -> Result<UserStore, Error> {
        let users = read_users(path)?;
        let decoy_hash = hash_password("ferry-decoy-password").map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            problems: vec![e],
        })?;
        let decoy = StoredPassword::parse(&decoy_hash).map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            problems: vec![e],
        })?;
        Ok(UserStore {
            path: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            decoy,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rereads the users file. On error the current users stay in place.
    pub fn reload(&self) -> Result<usize, Error> {
        let users = read_users(&self.path)?;
        let count = users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        Ok(count)
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<User>>> {
        Arc::clone(&self.users.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Looks a user up by name.
    pub fn get(&self, username: &str) -> Option<Arc<User>> {
        self.snapshot().get(username).cloned()
    }

    /// Returns the user when `password` matches. Takes about as long for unknown users and
    /// users without a password as for a wrong password. Runs the hash on a blocking thread.
    pub async fn verify_password(&self, username: &str, password: &str) -> Option<Arc<User>> {
        let user = self.get(username);
        let stored = user.as_ref().and_then(|u| u.password.clone());
        let decoy = self.decoy.clone();
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => stored.verify(&password),
            None => {
                decoy.verify(&password);
                false
            }
        })
        .await
        .unwrap_or(false);
        if matched { user } else { None }
    }

    /// Returns the user when `blob` (an SSH public key in wire encoding) is one of theirs.
    pub fn verify_public_key(&self, username: &str, blob: &[u8]) -> Option<Arc<User>> {
        self.get(username).filter(|user| user.has_public_key(blob))
    }

    /// Applies the account rules to a user whose credentials were verified.
    pub fn authorize(&self, user: &User, context: &LoginContext) -> Result<(), Denied> {
        if !user.enabled {
            return Err(Denied::Disabled);
        }
        if let Some(last_day) = user.expiration_date
            && time::OffsetDateTime::now_utc().date() > last_day
        {
            return Err(Denied::Expired);
        }
        if !user.ip_allowed(context.ip) {
            return Err(Denied::AddressNotAllowed);
        }
        if user.denied_protocols.contains(&context.protocol) {
            return Err(Denied::ProtocolDenied);
        }
        if !user.allows_method(context.method) {
            return Err(Denied::MethodNotAllowed);
        }
        Ok(())
    }

    /// Counts a new session of `user`, refusing it beyond `max_sessions`. The session ends
    /// when the returned guard is dropped.
    pub fn open_session(&self, user: &User) -> Result<SessionGuard, Denied> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let count = sessions.entry(user.username.clone()).or_insert(0);
        if user.max_sessions > 0 && *count >= user.max_sessions {
            return Err(Denied::TooManySessions);
        }
        *count += 1;
        Ok(SessionGuard {
            sessions: Arc::clone(&self.sessions),
            username: user.username.clone(),
        })
    }
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.path)
            .field("users", &self.len())
            .finish()
    }
}

/// Validates the text of a users file as [`UserStore::load`] would, returning the number of
/// users or every problem found. `base` resolves relative home directories.
pub fn check_users_text(text: &str, base: &Path) -> Result<usize, Vec<String>> {
    file::parse(text, base).map(|users| users.len())
}

fn read_users(path: &Path) -> Result<HashMap<String, Arc<User>>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    file::parse(&text, base).map_err(|problems| Error::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// A counted session; dropping it ends the session.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Mutex<HashMap<String, u32>>>,
    username: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = sessions.get_mut(&self.username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sessions.remove(&self.username);
            }
        }
    }
}

#[cfg(test)]
mod tests;
