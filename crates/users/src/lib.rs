//! User accounts: the users file, credential checks, and the rules that decide whether a
//! verified user may log in now.
//!
//! A login takes two steps in every protocol. First the credential is checked
//! ([`UserStore::verify_password`], [`User::has_public_key`]); then
//! [`UserStore::authorize`] applies the account rules (disabled, expired, client address,
//! protocol, login method) and [`UserStore::open_session`] the session limit. Callers tell
//! the client only that the login failed and log the [`Denied`] reason for the operator.
//!
//! While a user has sessions open, the store keeps the user's quota usage and bandwidth
//! buckets, so that every session of the user, over every protocol, shares them. They are
//! dropped with the last session, and the next session computes the quota usage again.

mod file;
mod keys;
mod login;
mod password;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use ferry_hooks::{LoginMethod, Protocol};
use ferry_vfs::{Limits, Quota, RateLimit};

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
    #[error("client address banned after repeated login failures")]
    AddressBanned,
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
    sessions: Arc<Mutex<HashMap<String, Sessions>>>,
    /// A real hash, checked when the user name is unknown so that the reply takes as long
    /// as for a known user and does not reveal which names exist.
    decoy: StoredPassword,
    /// Password checks that may run at once.
    hashing: tokio::sync::Semaphore,
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
            hashing: tokio::sync::Semaphore::new(parallel_hashes()),
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
        // Each check takes about 19 MiB and a core for tens of milliseconds; a bounded number
        // run at once, so a flood of guesses queues instead of exhausting memory.
        let Ok(_permit) = self.hashing.acquire().await else {
            return None;
        };
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
    /// when the returned guard is dropped. The guard carries the user's quota and bandwidth
    /// limits, shared with the user's other open sessions and updated to the user's current
    /// values.
    pub fn open_session(&self, user: &User) -> Result<SessionGuard, Denied> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let state = sessions.entry(user.username.clone()).or_default();
        if user.max_sessions > 0 && state.count >= user.max_sessions {
            return Err(Denied::TooManySessions);
        }
        state.count += 1;
        Ok(SessionGuard {
            sessions: Arc::clone(&self.sessions),
            username: user.username.clone(),
            limits: state.limits_for(user),
        })
    }

    /// Returns the bytes and files counted against `username`'s quota, while the user has a
    /// session open and a quota.
    pub fn quota_usage(&self, username: &str) -> Option<ferry_vfs::QuotaUsage> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(username)?
            .limits
            .quota
            .as_ref()
            .map(|q| q.usage())
    }
}

/// The open sessions of one user and the limits they share.
#[derive(Debug, Default)]
struct Sessions {
    count: u32,
    limits: Limits,
}

impl Sessions {
    /// Returns the shared limits with `user`'s current values, keeping the usage and buckets
    /// of limits that already exist. A limit that the user no longer has is dropped here, so
    /// the sessions that use it keep it and new sessions go without it.
    fn limits_for(&mut self, user: &User) -> Limits {
        let limits = &mut self.limits;
        if !user.has_quota() {
            limits.quota = None;
        } else if let Some(quota) = &limits.quota {
            quota.set_limits(user.quota_size, user.quota_files);
        } else {
            limits.quota = Some(Arc::new(Quota::new(user.quota_size, user.quota_files)));
        }
        update_rate(&mut limits.upload, user.upload_bandwidth);
        update_rate(&mut limits.download, user.download_bandwidth);
        limits.clone()
    }
}

/// Sets a shared bucket to `kib_per_second`, creating it when missing; 0 drops it.
fn update_rate(bucket: &mut Option<Arc<RateLimit>>, kib_per_second: u64) {
    if kib_per_second == 0 {
        *bucket = None;
        return;
    }
    let bytes_per_second = kib_per_second.saturating_mul(1024);
    match bucket {
        Some(limit) => limit.set_bytes_per_second(bytes_per_second),
        None => *bucket = Some(Arc::new(RateLimit::new(bytes_per_second))),
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

/// Password checks allowed at once: one per core, at least two.
fn parallel_hashes() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
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
    sessions: Arc<Mutex<HashMap<String, Sessions>>>,
    username: String,
    limits: Limits,
}

impl SessionGuard {
    /// Returns the quota and bandwidth limits of the session's user, which all of the user's
    /// sessions share.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = sessions.get_mut(&self.username) {
            state.count = state.count.saturating_sub(1);
            if state.count == 0 {
                sessions.remove(&self.username);
            }
        }
    }
}

#[cfg(test)]
mod tests;
