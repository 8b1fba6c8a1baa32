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
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for VfsError {
    fn from(error: io::Error) -> Self {
        use io::ErrorKind as K;
        match error.kind() {
            K::NotFound => VfsError::NotFound,
            // cap-std reports a path that leads outside the home as PermissionDenied.
            K::PermissionDenied => VfsError::PermissionDenied,
            K::AlreadyExists => VfsError::AlreadyExists,
            K::NotADirectory => VfsError::NotADirectory,
            K::IsADirectory => VfsError::IsADirectory,
            K::DirectoryNotEmpty => VfsError::DirectoryNotEmpty,
            K::StorageFull | K::QuotaExceeded => VfsError::StorageFull,
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
    /// Returns whether the error is the client's doing (a bad path, a missing file, a denied
    /// operation) rather than a local failure that an operator may need to look at.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, VfsError::Io(_) | VfsError::StorageFull)
    }
}
