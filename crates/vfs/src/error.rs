use std::io;

/// Why a file operation failed, in terms every protocol can map to its own error replies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    /// The user's permissions forbid the operation, or the path leads outside the home.
    #[error("permission denied")]
    PermissionDenied,
    #[error("file exists")]
    AlreadyExists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    DirectoryNotEmpty,
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("no space left on the device")]
    StorageFull,
    /// The operation would take the user past their `quota_size` or `quota_files`.
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for VfsError {
    fn from(error: io::Error) -> Self {
        use io::ErrorKind as K;
        // The file streams report an exceeded quota as an io::Error that carries this variant.
        if error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<VfsError>())
            .is_some_and(|inner| matches!(inner, VfsError::QuotaExceeded))
        {
            return VfsError::QuotaExceeded;
        }
        match error.kind() {
            K::NotFound => VfsError::NotFound,
            // cap-std reports a path that leads outside the home as PermissionDenied.
            K::PermissionDenied => VfsError::PermissionDenied,
            K::AlreadyExists => VfsError::AlreadyExists,
            K::NotADirectory => VfsError::NotADirectory,
            K::IsADirectory => VfsError::IsADirectory,
            K::DirectoryNotEmpty => VfsError::DirectoryNotEmpty,
            K::StorageFull => VfsError::StorageFull,
            K::QuotaExceeded => VfsError::QuotaExceeded,
            K::InvalidFilename => VfsError::InvalidPath(error.to_string()),
            _ => match error.raw_os_error() {
                Some(code) if code == libc_eloop() => VfsError::PermissionDenied,
                _ => VfsError::Io(error),
            },
        }
    }
}

/// ELOOP: too many symlinks, or a symlink where none may be followed.
fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

impl VfsError {
    /// Wraps the quota error in an `io::Error` for the tokio file streams; converting it back
    /// with `VfsError::from` restores [`VfsError::QuotaExceeded`].
    pub(crate) fn quota_io_error() -> io::Error {
        io::Error::new(io::ErrorKind::QuotaExceeded, VfsError::QuotaExceeded)
    }

    /// Returns whether the error is the client's doing (a bad path, a missing file, a denied
    /// operation) rather than a local failure that an operator may need to look at.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, VfsError::Io(_) | VfsError::StorageFull)
    }
}
