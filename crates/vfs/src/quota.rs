//! Per-user disk quotas: the bytes and regular files in a home, shared by every session of
//! the user.
//!
//! The usage is computed once by walking the home when the first session opens, then kept up
//! to date by each operation that changes it. An upload reserves its growth before each write,
//! so that concurrent uploads of one user cannot pass the quota together. Files changed
//! outside Ferry while sessions are open are not seen until the usage is computed again.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cap_std::fs::Dir;

use crate::{UPLOAD_TEMP_PREFIX, VfsError};

/// Bytes and regular files counted against a quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    pub bytes: u64,
    pub files: u64,
}

/// The quota of one user and its current usage; share one per user with an [`Arc`].
#[derive(Debug)]
pub struct Quota {
    /// Maximum bytes; 0 is unlimited.
    max_bytes: AtomicU64,
    /// Maximum regular files; 0 is unlimited.
    max_files: AtomicU64,
    usage: Mutex<QuotaUsage>,
    scanned: tokio::sync::OnceCell<()>,
}

impl Quota {
    /// Creates a quota of `max_bytes` and `max_files` (0 is unlimited) with no usage counted
    /// yet. The first [`Vfs`](crate::Vfs) opened with it computes the usage of its home.
    pub fn new(max_bytes: u64, max_files: u64) -> Quota {
        Quota {
            max_bytes: AtomicU64::new(max_bytes),
            max_files: AtomicU64::new(max_files),
            usage: Mutex::new(QuotaUsage::default()),
            scanned: tokio::sync::OnceCell::new(),
        }
    }

    /// Changes the limits, for example after the users file was reloaded. The usage stays.
    pub fn set_limits(&self, max_bytes: u64, max_files: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.max_files.store(max_files, Ordering::Relaxed);
    }

    /// Returns `(max_bytes, max_files)`; 0 is unlimited.
    pub fn limits(&self) -> (u64, u64) {
        (
            self.max_bytes.load(Ordering::Relaxed),
            self.max_files.load(Ordering::Relaxed),
        )
    }

    /// Returns the bytes and files counted now, including uploads in progress.
    pub fn usage(&self) -> QuotaUsage {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, QuotaUsage> {
        // The usage is two counters that every path updates in one step, so the value of a
        // poisoned lock is still consistent.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Computes the usage of `root` unless an earlier call did; concurrent callers wait for
    /// the one walk.
    pub(crate) async fn scan_once(&self, root: &Dir, home: PathBuf) -> Result<(), VfsError> {
        self.scanned
            .get_or_try_init(|| async {
                let root = root.try_clone()?;
                let started = Instant::now();
                let usage = crate::blocking(move || Ok(walk(&root))).await?;
                tracing::info!(
                    home = %home.display(),
                    size_bytes = usage.bytes,
                    files = usage.files,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "quota usage computed"
                );
                let mut current = self.lock();
                current.bytes = current.bytes.saturating_add(usage.bytes);
                current.files = current.files.saturating_add(usage.files);
                Ok::<(), VfsError>(())
            })
            .await
            .map(|_| ())
    }

    /// Reserves `bytes` and `files` for a new file or a larger one. `credit` is the size of a
    /// file that the change replaces, which is still counted and may be reused.
    pub(crate) fn reserve(&self, bytes: u64, files: u64, credit: u64) -> Result<(), VfsError> {
        let (max_bytes, max_files) = self.limits();
        let mut usage = self.lock();
        if files > 0 && max_files > 0 && usage.files.saturating_add(files) > max_files {
            return Err(VfsError::QuotaExceeded);
        }
        if bytes > 0
            && max_bytes > 0
            && usage.bytes.saturating_sub(credit).saturating_add(bytes) > max_bytes
        {
            return Err(VfsError::QuotaExceeded);
        }
        usage.bytes = usage.bytes.saturating_add(bytes);
        usage.files = usage.files.saturating_add(files);
        Ok(())
    }

    /// Stops counting `bytes` and `files`, after a delete or an upload that was discarded.
    pub(crate) fn release(&self, bytes: u64, files: u64) {
        let mut usage = self.lock();
        usage.bytes = usage.bytes.saturating_sub(bytes);
        usage.files = usage.files.saturating_sub(files);
    }

    /// Checks that an upload may start: a new file needs a free file slot, which is reserved
    /// now, and some bytes must be left (for an overwrite, once the replaced file is gone).
    pub(crate) fn begin_upload(
        self: &Arc<Quota>,
        existing_size: Option<u64>,
        truncate: bool,
    ) -> Result<Charge, VfsError> {
        let (max_bytes, max_files) = self.limits();
        let credit = existing_size.unwrap_or(0);
        let new_file = existing_size.is_none();
        {
            let mut usage = self.lock();
            if new_file && max_files > 0 && usage.files >= max_files {
                return Err(VfsError::QuotaExceeded);
            }
            let kept = if truncate {
                usage.bytes.saturating_sub(credit)
            } else {
                usage.bytes
            };
            if max_bytes > 0 && kept >= max_bytes {
                return Err(VfsError::QuotaExceeded);
            }
            if new_file {
                usage.files = usage.files.saturating_add(1);
            }
        }
        let size = if truncate { 0 } else { credit };
        Ok(Charge {
            quota: Arc::clone(self),
            state: Mutex::new(ChargeState {
                credit,
                size,
                charged: 0,
                new_file,
                exceeded: false,
                finished: false,
            }),
        })
    }
}

/// Walks a home and counts its regular files and their bytes. Symlinks are not followed and
/// uploads in progress are skipped. Folders that cannot be read are skipped with a warning.
fn walk(root: &Dir) -> QuotaUsage {
    let mut usage = QuotaUsage::default();
    // Paths rather than open handles wait in the list, so a wide tree does not use up file
    // descriptors; each is reopened through the jail.
    let mut pending = vec![PathBuf::from(".")];
    while let Some(rel) = pending.pop() {
        let entries = match root.open_dir(&rel).and_then(|dir| dir.entries()) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(path = %rel.display(), %error, "folder skipped when computing quota usage");
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            // NOTE: this also skips uploads that a killed server left behind. Nothing removes
            // them, so they take disk space that no quota counts.
            if name.to_string_lossy().starts_with(UPLOAD_TEMP_PREFIX) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                pending.push(rel.join(&name));
            } else if file_type.is_file()
                && let Ok(meta) = entry.metadata()
            {
                usage.bytes = usage.bytes.saturating_add(meta.len());
                usage.files += 1;
            }
        }
    }
    usage
}

/// The quota share of one upload: the growth of its file, reserved before each write.
///
/// `credit` is the size of the file the upload replaces, which stays counted until the
/// upload is published, so an overwrite may reuse that space. Only the part of the upload
/// beyond `credit` is reserved while it runs.
#[derive(Debug)]
pub(crate) struct Charge {
    quota: Arc<Quota>,
    state: Mutex<ChargeState>,
}

#[derive(Debug)]
struct ChargeState {
    credit: u64,
    /// The size of the file being written, as far as the writes show it.
    size: u64,
    /// Bytes reserved in the quota beyond `credit`.
    charged: u64,
    /// The upload creates a file and has reserved a file slot for it.
    new_file: bool,
    /// A write or resize failed on the quota, so the file lacks data the client sent.
    exceeded: bool,
    finished: bool,
}

impl Charge {
    fn lock(&self) -> MutexGuard<'_, ChargeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the size of the file being written, reserving or releasing the difference. Once
    /// the upload is settled, later writes through a leftover stream change nothing.
    fn resize(&self, state: &mut ChargeState, size: u64) -> Result<(), VfsError> {
        if state.finished {
            return Ok(());
        }
        let charged = size.saturating_sub(state.credit);
        if charged > state.charged {
            if let Err(error) = self.quota.reserve(charged - state.charged, 0, 0) {
                state.exceeded = true;
                return Err(error);
            }
        } else {
            self.quota.release(state.charged - charged, 0);
        }
        state.charged = charged;
        state.size = size;
        Ok(())
    }

    /// Reserves a write that ends at `end`.
    pub(crate) fn write_until(&self, end: u64) -> Result<(), VfsError> {
        let mut state = self.lock();
        if end <= state.size {
            return Ok(());
        }
        self.resize(&mut state, end)
    }

    /// Reserves `len` bytes written at the end of the file, for files opened in append mode.
    pub(crate) fn append(&self, len: u64) -> Result<(), VfsError> {
        let mut state = self.lock();
        let end = state.size.saturating_add(len);
        self.resize(&mut state, end)
    }

    /// Reserves or releases space for a truncate or an extension to `len` bytes.
    pub(crate) fn set_len(&self, len: u64) -> Result<(), VfsError> {
        let mut state = self.lock();
        self.resize(&mut state, len)
    }

    /// Returns the size of the file being written, as far as the writes show it.
    pub(crate) fn size(&self) -> u64 {
        self.lock().size
    }

    /// Returns whether a write or resize failed on the quota.
    pub(crate) fn exceeded(&self) -> bool {
        self.lock().exceeded
    }

    /// Settles the upload. A published upload replaces the old file's count with its own
    /// `final_size`; a discarded one returns what it reserved.
    pub(crate) fn finish(&self, published: Option<u64>) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        state.finished = true;
        match published {
            Some(final_size) => {
                self.quota.release(state.charged + state.credit, 0);
                // The file exists now whatever the limit, so it is counted unconditionally.
                let mut usage = self.quota.lock();
                usage.bytes = usage.bytes.saturating_add(final_size);
            }
            None => {
                let files = u64::from(state.new_file);
                self.quota.release(state.charged, files);
            }
        }
    }
}

impl Charge {
    /// Checks, just before an atomic upload is renamed over its target, that publishing it
    /// keeps the user within the quota. The space of the file found at open was lent to the
    /// upload; if that file was renamed away or deleted meanwhile, the loan is void and the
    /// upload must fit on its own.
    pub(crate) fn check_publish(
        &self,
        final_size: u64,
        replaced: Option<u64>,
    ) -> Result<(), VfsError> {
        let state = self.lock();
        let (max_bytes, max_files) = self.quota.limits();
        let usage = self.quota.lock();
        let others = usage.bytes.saturating_sub(state.charged);
        let after = others
            .saturating_sub(replaced.unwrap_or(0))
            .saturating_add(final_size);
        let grows = final_size > replaced.unwrap_or(0);
        if max_bytes > 0 && grows && after > max_bytes {
            return Err(VfsError::QuotaExceeded);
        }
        let files_after =
            usage.files.saturating_sub(u64::from(state.new_file)) + u64::from(replaced.is_none());
        if max_files > 0 && replaced.is_none() && files_after > max_files {
            return Err(VfsError::QuotaExceeded);
        }
        Ok(())
    }

    /// Settles an atomic upload that was renamed over its target. `replaced` is the size of
    /// the file the rename replaced, looked up just before it: the file found at open may have
    /// been renamed away or deleted meanwhile, and then it must stay counted, or not be
    /// released twice.
    pub(crate) fn finish_replacing(&self, final_size: u64, replaced: Option<u64>) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        state.finished = true;
        let reserved_files = u64::from(state.new_file);
        let mut usage = self.quota.lock();
        usage.bytes = usage.bytes.saturating_sub(state.charged);
        usage.files = usage.files.saturating_sub(reserved_files);
        if let Some(old) = replaced {
            usage.bytes = usage.bytes.saturating_sub(old);
            usage.files = usage.files.saturating_sub(1);
        }
        // The file exists now whatever the limit, so it is counted unconditionally.
        usage.bytes = usage.bytes.saturating_add(final_size);
        usage.files = usage.files.saturating_add(1);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        // A writer settles its charge when it is committed or dropped; this covers a writer
        // that was never created because opening the file failed.
        self.finish(None);
    }
}

/// Returns the size of an open file, for settling an upload.
pub(crate) fn file_size(file: &std::fs::File) -> io::Result<u64> {
    file.metadata().map(|m| m.len())
}
