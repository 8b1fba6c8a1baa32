//! WebDAV locks (RFC 4918 class 2), kept in memory with one table per user.
//!
//! dav-server's `MemLs` keeps expired locks forever and is keyed by path only, so a lock
//! table shared by all users would let one user's lock block another user's file at the same
//! path. Here every user has a table of their own, locks expire at their timeout, and a lock
//! requested without a timeout gets [`DEFAULT_TIMEOUT`] so that a client that crashes cannot
//! block a file until the server restarts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use xmltree::Element;

/// Timeout given to locks requested without one (RFC 4918 lets the server choose).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Live locks one user may hold. The limit stops an authenticated client from exhausting
/// memory with LOCK requests; further LOCKs get 423 until some expire or are released.
pub(crate) const MAX_LOCKS_PER_USER: usize = 1000;

/// One user's lock table; clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct UserLocks {
    locks: Arc<Mutex<Vec<DavLock>>>,
}

/// Returns the non-empty segments of a path, so that `/a/` and `/a` compare equal.
fn segments(path: &DavPath) -> Vec<&[u8]> {
    path.as_bytes()
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// Returns whether `inner` lies strictly below `outer`.
fn is_below(inner: &DavPath, outer: &DavPath) -> bool {
    let (inner, outer) = (segments(inner), segments(outer));
    inner.len() > outer.len() && inner.starts_with(&outer)
}

fn same_path(a: &DavPath, b: &DavPath) -> bool {
    segments(a) == segments(b)
}

/// Returns whether `lock` applies to `path`: it is on the path itself, or it is a deep lock
/// on a collection above it.
fn covers(lock: &DavLock, path: &DavPath) -> bool {
    same_path(&lock.path, path) || (lock.deep && is_below(path, &lock.path))
}

/// Returns a fresh lock token, a random (version 4) UUID as a URN.
fn new_token() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl UserLocks {
    /// Locks the table after dropping every expired lock.
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<DavLock>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        locks.retain(|lock| lock.timeout_at.is_none_or(|at| at > now));
        locks
    }

    fn try_lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<DavLock, DavLock> {
        let mut locks = self.live();
        // A shared lock coexists with other shared locks; anything else conflicts. A deep lock
        // must also be compatible with every lock below it.
        let conflict = locks.iter().find(|lock| {
            let overlaps = covers(lock, path) || (deep && is_below(&lock.path, path));
            overlaps && !(lock.shared && shared)
        });
        if let Some(lock) = conflict {
            return Err(lock.clone());
        }
        if locks.len() >= MAX_LOCKS_PER_USER {
            tracing::warn!(
                %path, limit = MAX_LOCKS_PER_USER,
                "LOCK rejected: the user holds the maximum number of locks"
            );
            return Err(locks[0].clone());
        }
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let lock = DavLock {
            token: new_token(),
            path: Box::new(path.clone()),
            principal: principal.map(str::to_owned),
            owner: owner.map(|o| Box::new(o.clone())),
            timeout_at: Some(SystemTime::now() + timeout),
            timeout: Some(timeout),
            shared,
            deep,
        };
        locks.push(lock.clone());
        Ok(lock)
    }

    fn check_held(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        tokens: &[String],
    ) -> Result<(), DavLock> {
        let locks = self.live();
        let held = |lock: &DavLock| {
            tokens.contains(&lock.token)
                && (ignore_principal || principal == lock.principal.as_deref())
        };

        // Locks on the path or inherited from above: an exclusive lock must be held, and of
        // shared locks holding any one is enough.
        let mut holds_one = false;
        let mut unheld_shared = None;
        for lock in locks.iter().filter(|lock| covers(lock, path)) {
            if held(lock) {
                holds_one = true;
            } else if !lock.shared {
                return Err(lock.clone());
            } else {
                unheld_shared.get_or_insert(lock);
            }
        }
        if let Some(lock) = unheld_shared
            && !holds_one
        {
            return Err(lock.clone());
        }

        // Changing a whole tree needs every lock inside it.
        if deep
            && let Some(lock) = locks
                .iter()
                .find(|lock| is_below(&lock.path, path) && !held(lock))
        {
            return Err(lock.clone());
        }
        Ok(())
    }
}

impl DavLockSystem for UserLocks {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let result = self.try_lock(path, principal, owner, timeout, shared, deep);
        Box::pin(std::future::ready(result))
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let mut locks = self.live();
        let position = locks
            .iter()
            .position(|lock| lock.token == token && covers(lock, path));
        let result = match position {
            Some(i) => {
                locks.remove(i);
                Ok(())
            }
            None => Err(()),
        };
        Box::pin(std::future::ready(result))
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let mut locks = self.live();
        let found = locks
            .iter_mut()
            .find(|lock| lock.token == token && covers(lock, path));
        let result = match found {
            Some(lock) => {
                let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
                lock.timeout = Some(timeout);
                lock.timeout_at = Some(SystemTime::now() + timeout);
                Ok(lock.clone())
            }
            None => Err(()),
        };
        Box::pin(std::future::ready(result))
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let result = self.check_held(path, principal, ignore_principal, deep, submitted_tokens);
        Box::pin(std::future::ready(result))
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let found = self
            .live()
            .iter()
            .filter(|lock| covers(lock, path))
            .cloned()
            .collect();
        Box::pin(std::future::ready(found))
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        self.live()
            .retain(|lock| !same_path(&lock.path, path) && !is_below(&lock.path, path));
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(text: &str) -> DavPath {
        DavPath::new(text).unwrap()
    }

    fn lock(locks: &UserLocks, path: &str, shared: bool, deep: bool) -> Result<DavLock, DavLock> {
        locks.try_lock(&p(path), Some("alice"), None, None, shared, deep)
    }

    #[test]
    fn exclusive_blocks_second_lock() {
        let locks = UserLocks::default();
        lock(&locks, "/a.txt", false, false).unwrap();
        assert!(lock(&locks, "/a.txt", false, false).is_err());
        assert!(lock(&locks, "/a.txt", true, false).is_err());
        assert!(lock(&locks, "/b.txt", false, false).is_ok());
    }

    #[test]
    fn shared_locks_coexist() {
        let locks = UserLocks::default();
        lock(&locks, "/a.txt", true, false).unwrap();
        lock(&locks, "/a.txt", true, false).unwrap();
        assert!(lock(&locks, "/a.txt", false, false).is_err());
    }

    #[test]
    fn deep_lock_covers_children() {
        let locks = UserLocks::default();
        let dir = lock(&locks, "/dir/", false, true).unwrap();
        assert!(lock(&locks, "/dir/file", false, false).is_err());
        let tokens = vec![dir.token.clone()];
        assert!(
            locks
                .check_held(&p("/dir/file"), Some("alice"), false, false, &tokens)
                .is_ok()
        );
        assert!(
            locks
                .check_held(&p("/dir/file"), Some("alice"), false, false, &[])
                .is_err()
        );
        assert!(
            locks
                .check_held(&p("/other"), Some("alice"), false, false, &[])
                .is_ok()
        );
    }

    #[test]
    fn deep_lock_conflicts_with_child_lock() {
        let locks = UserLocks::default();
        lock(&locks, "/dir/file", false, false).unwrap();
        assert!(lock(&locks, "/dir", false, true).is_err());
        assert!(lock(&locks, "/dir", false, false).is_ok());
    }

    #[test]
    fn deep_check_needs_child_tokens() {
        let locks = UserLocks::default();
        let child = lock(&locks, "/dir/file", false, false).unwrap();
        assert!(locks.check_held(&p("/dir"), None, true, true, &[]).is_err());
        assert!(
            locks
                .check_held(&p("/dir"), None, true, true, &[child.token])
                .is_ok()
        );
        assert!(locks.check_held(&p("/dir"), None, true, false, &[]).is_ok());
    }

    #[test]
    fn principal_must_match() {
        let locks = UserLocks::default();
        let held = lock(&locks, "/a", false, false).unwrap();
        let tokens = vec![held.token];
        assert!(
            locks
                .check_held(&p("/a"), Some("bob"), false, false, &tokens)
                .is_err()
        );
        assert!(
            locks
                .check_held(&p("/a"), Some("bob"), true, false, &tokens)
                .is_ok()
        );
    }

    #[test]
    fn expired_lock_released() {
        let locks = UserLocks::default();
        locks
            .try_lock(&p("/a"), None, None, Some(Duration::ZERO), false, false)
            .unwrap();
        assert!(lock(&locks, "/a", false, false).is_ok());
    }

    #[test]
    fn unlock_refresh_delete() {
        let locks = UserLocks::default();
        let held = lock(&locks, "/d", false, true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(locks.unlock(&p("/x"), &held.token).await.is_err());
            let refreshed = locks
                .refresh(&p("/d/f"), &held.token, Some(Duration::from_secs(60)))
                .await
                .unwrap();
            assert_eq!(refreshed.timeout, Some(Duration::from_secs(60)));
            assert_eq!(locks.discover(&p("/d/f")).await.len(), 1);
            assert!(locks.unlock(&p("/d/"), &held.token).await.is_ok());
            assert!(locks.discover(&p("/d")).await.is_empty());
            lock(&locks, "/d/f", false, false).unwrap();
            locks.delete(&p("/d")).await.unwrap();
            assert!(locks.discover(&p("/d/f")).await.is_empty());
        });
    }

    #[test]
    fn token_is_uuid_urn() {
        let token = new_token();
        assert_eq!(token.len(), "urn:uuid:".len() + 36);
        assert_eq!(&token[9 + 14..9 + 15], "4");
    }

    #[test]
    fn missing_timeout_gets_default() {
        let locks = UserLocks::default();
        let held = lock(&locks, "/a", false, false).unwrap();
        assert_eq!(held.timeout, Some(DEFAULT_TIMEOUT));
    }
}
