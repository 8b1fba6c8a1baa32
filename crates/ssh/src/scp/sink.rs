//! `scp -t`: the client sends files and directories, the server writes them.

use ferry_vfs::{FileWriter, VPath, Vfs, VfsError, WriteOptions};
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::protocol::{Record, Times};
use super::{COPY_BUFFER, Command, Io, Response, Stop, describe, resolve_path};

/// Permission bits that a new file without `-p` does not get, as a umask of 022 would.
const DEFAULT_UMASK: u32 = 0o022;

/// A directory being written, from its `D` record to its `E` record.
struct OpenDir {
    path: VPath,
    mode: u32,
    times: Option<Times>,
}

/// Receives records until the client closes its side or sends a fatal error.
pub(super) async fn run<R, W, E>(
    io: &mut Io<R, W, E>,
    command: &Command,
    vfs: &Vfs,
) -> Result<(), Stop>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let target_text = command.paths.first().map_or(".", |p| p.text.as_str());
    let target = match resolve_path(target_text) {
        Ok(path) => path,
        Err(error) => {
            return io
                .fatal(&format!("{target_text}: {}", describe(&error)))
                .await;
        }
    };
    let target_is_dir = matches!(vfs.metadata(&target).await, Ok(meta) if meta.is_dir());
    if command.target_must_be_dir && !target_is_dir {
        return io.fatal(&format!("{target}: Not a directory")).await;
    }
    io.send_ok().await?;

    let mut dirs: Vec<OpenDir> = Vec::new();
    let mut times: Option<Times> = None;
    while let Some(line) = io.read_line().await? {
        let record = match Record::parse(&line) {
            Ok(record) => record,
            Err(problem) => {
                io.fatal(&format!("protocol error: {problem}")).await?;
                return Err(Stop::Protocol(problem));
            }
        };
        match record {
            Record::Warning(message) => {
                debug!(reason = ?message, "client reported a failure");
                io.errors += 1;
            }
            Record::Fatal(message) => {
                io.errors += 1;
                return Err(Stop::PeerFatal(message));
            }
            Record::Times(t) => {
                times = Some(t);
                io.send_ok().await?;
            }
            Record::Dir { mode, name } => {
                if !command.recursive {
                    io.fatal("received a directory without -r").await?;
                    return Err(Stop::Protocol("directory without -r".into()));
                }
                let path = match destination(&target, target_is_dir, &dirs, &name) {
                    Ok(path) => path,
                    Err(error) => {
                        io.warn(&format!("{name}: {}", describe(&error))).await?;
                        continue;
                    }
                };
                match ensure_dir(vfs, &path).await {
                    Ok(()) => {
                        dirs.push(OpenDir {
                            path,
                            mode,
                            times: times.take(),
                        });
                        io.send_ok().await?;
                    }
                    Err(error) => {
                        times = None;
                        io.warn(&format!("{path}: {}", describe(&error))).await?;
                    }
                }
            }
            Record::End => {
                let Some(dir) = dirs.pop() else {
                    io.fatal("protocol error: E record outside a directory")
                        .await?;
                    return Err(Stop::Protocol("unmatched E record".into()));
                };
                match finish_dir(vfs, &dir, command.preserve).await {
                    Ok(()) => io.send_ok().await?,
                    Err(error) => {
                        io.warn(&format!("{}: {}", dir.path, describe(&error)))
                            .await?
                    }
                }
            }
            Record::File { mode, size, name } => {
                let path = match destination(&target, target_is_dir, &dirs, &name) {
                    Ok(path) => path,
                    Err(error) => {
                        times = None;
                        io.warn(&format!("{name}: {}", describe(&error))).await?;
                        continue;
                    }
                };
                let file_times = times.take();
                receive_file(io, vfs, &path, mode, size, file_times, command.preserve).await?;
            }
        }
    }
    Ok(())
}

/// Returns where an entry named `name` goes: inside the directory being written, inside
/// the target when it is a directory, or the target itself.
fn destination(
    target: &VPath,
    target_is_dir: bool,
    dirs: &[OpenDir],
    name: &str,
) -> Result<VPath, VfsError> {
    match dirs.last() {
        Some(dir) => dir.path.join(name),
        None if target_is_dir => target.join(name),
        None => Ok(target.clone()),
    }
}

/// Creates a directory, or accepts an existing one.
async fn ensure_dir(vfs: &Vfs, path: &VPath) -> Result<(), VfsError> {
    match vfs.metadata(path).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(VfsError::NotADirectory),
        Err(VfsError::NotFound) => vfs.create_dir(path).await,
        Err(error) => Err(error),
    }
}

/// Applies a finished directory's mode and times when `-p` was given. Times are set after
/// the entries were written, since writing them changes the directory's modification time.
async fn finish_dir(vfs: &Vfs, dir: &OpenDir, preserve: bool) -> Result<(), VfsError> {
    if !preserve {
        return Ok(());
    }
    vfs.set_mode(&dir.path, dir.mode).await?;
    if let Some(times) = dir.times {
        vfs.set_times(&dir.path, Some(times.accessed), Some(times.modified))
            .await?;
    }
    Ok(())
}

/// Receives one file's data after its `C` record and publishes it when the data and the
/// client's acknowledgement are complete.
async fn receive_file<R, W, E>(
    io: &mut Io<R, W, E>,
    vfs: &Vfs,
    path: &VPath,
    mode: u32,
    size: u64,
    times: Option<Times>,
    preserve: bool,
) -> Result<(), Stop>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let existed = vfs.metadata(path).await.is_ok();
    let writer = match vfs.open_write(path, WriteOptions::replace()).await {
        Ok(writer) => writer,
        // The client skips the data of a file that got a warning instead of `\0`.
        Err(error) => return io.warn(&format!("{path}: {}", describe(&error))).await,
    };
    io.send_ok().await?;

    let write_error = copy_data(io, &writer, size).await?;
    // libssh2, which curl and many language bindings use, closes its side after the data
    // instead of sending `\0`; the data is complete by then, so that counts as success.
    let response = io.read_response_or_end().await?.unwrap_or(Response::Ok);
    if let Some(error) = write_error {
        return io.warn(&format!("{path}: {}", describe(&error))).await;
    }
    if let Response::Warning(message) = response {
        // The client could not read its whole file. The partial upload is discarded, and
        // the client still waits for a response.
        debug!(path = ?path.as_str(), reason = ?message, "upload abandoned by the client");
        return io.send_ok().await;
    }
    if let Err(error) = writer.commit().await {
        return io.warn(&format!("{path}: {}", describe(&error))).await;
    }
    debug!(path = ?path.as_str(), size_bytes = size, "file received");

    let applied = if preserve {
        apply_preserved(vfs, path, mode, times).await
    } else {
        if !existed && mode & 0o777 & !DEFAULT_UMASK != 0o644 {
            // The mode of a new file follows the source's, as a local copy would; a user
            // without the chmod permission keeps the default mode.
            let _ = vfs.set_mode(path, mode & 0o777 & !DEFAULT_UMASK).await;
        }
        Ok(())
    };
    match applied {
        Ok(()) => io.send_ok().await,
        Err(error) => io.warn(&format!("{path}: {}", describe(&error))).await,
    }
}

async fn apply_preserved(
    vfs: &Vfs,
    path: &VPath,
    mode: u32,
    times: Option<Times>,
) -> Result<(), VfsError> {
    vfs.set_mode(path, mode).await?;
    if let Some(times) = times {
        vfs.set_times(path, Some(times.accessed), Some(times.modified))
            .await?;
    }
    Ok(())
}

/// Copies exactly `size` bytes from the channel into `writer`. A write failure does not stop
/// the reading, so the protocol stays in step; it is returned for the caller to report.
async fn copy_data<R, W, E>(
    io: &mut Io<R, W, E>,
    writer: &FileWriter,
    size: u64,
) -> Result<Option<VfsError>, Stop>
where
    R: AsyncBufRead + Unpin,
{
    let mut file = match writer.stream() {
        Ok(file) => Some(file),
        Err(error) => return drain(io, size).await.map(|()| Some(error)),
    };
    let mut buffer = vec![
        0u8;
        COPY_BUFFER
            .min(usize::try_from(size).unwrap_or(COPY_BUFFER))
            .max(1)
    ];
    let mut left = size;
    let mut failure = None;
    while left > 0 {
        let want = usize::try_from(left).map_or(buffer.len(), |l| l.min(buffer.len()));
        let chunk = buffer.get_mut(..want).unwrap_or_default();
        let n = io.reader.read(chunk).await?;
        if n == 0 {
            return Err(Stop::Protocol(format!(
                "input ended with {left} bytes of a file missing"
            )));
        }
        left -= n as u64;
        if let Some(out) = file.as_mut()
            && let Err(error) = out.write_all(chunk.get(..n).unwrap_or_default()).await
        {
            failure = Some(VfsError::from(error));
            file = None;
        }
    }
    if let Some(out) = file.as_mut()
        && let Err(error) = out.flush().await
    {
        failure = Some(VfsError::from(error));
    }
    Ok(failure)
}

/// Reads and discards `size` bytes.
async fn drain<R, W, E>(io: &mut Io<R, W, E>, size: u64) -> Result<(), Stop>
where
    R: AsyncBufRead + Unpin,
{
    let copied = tokio::io::copy(&mut (&mut io.reader).take(size), &mut tokio::io::sink()).await?;
    if copied < size {
        return Err(Stop::Protocol("input ended inside a file".into()));
    }
    Ok(())
}
