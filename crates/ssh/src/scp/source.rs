//! `scp -f`: the server sends the named files and directories to the client.

use std::future::Future;
use std::pin::Pin;

use ferry_vfs::{FileKind, VPath, Vfs};
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::command::PathArg;
use super::protocol::{self, Times};
use super::{COPY_BUFFER, Command, Io, Response, Stop, describe, resolve_path};

/// Directory levels a recursive download descends; deeper trees, including symlink loops,
/// are cut off with an error.
const MAX_DEPTH: usize = 64;

/// Waits for the client to be ready, then sends every path of the command.
pub(super) async fn run<R, W, E>(
    io: &mut Io<R, W, E>,
    command: &Command,
    vfs: &Vfs,
) -> Result<(), Stop>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    if io.read_response().await? != Response::Ok {
        return Ok(());
    }
    for arg in &command.paths {
        let paths = match expand(arg, vfs).await {
            Ok(paths) => paths,
            Err(message) => {
                io.warn(&message).await?;
                continue;
            }
        };
        for path in paths {
            send_path(io, vfs, command, path, 0).await?;
        }
    }
    Ok(())
}

/// Resolves one path argument, expanding wildcards in its last component as a shell would.
async fn expand(arg: &PathArg, vfs: &Vfs) -> Result<Vec<VPath>, String> {
    let path = resolve_path(&arg.text).map_err(|e| format!("{}: {}", arg.text, describe(&e)))?;
    let pattern = match path.file_name() {
        Some(name) if arg.has_wildcards && has_wildcard(name) => name.to_owned(),
        _ => return Ok(vec![path]),
    };
    let parent = path.parent();
    if has_wildcard(parent.as_str()) {
        return Err(format!(
            "{}: wildcards are supported in the last path component only",
            arg.text
        ));
    }
    let entries = vfs
        .read_dir(&parent)
        .await
        .map_err(|e| format!("{}: {}", arg.text, describe(&e)))?;
    let mut names: Vec<String> = entries
        .into_iter()
        .map(|entry| entry.name)
        .filter(|name| {
            (pattern.starts_with('.') || !name.starts_with('.')) && wildcard_match(&pattern, name)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("{}: No such file or directory", arg.text));
    }
    names
        .iter()
        .map(|name| {
            parent
                .join(name)
                .map_err(|e| format!("{name}: {}", describe(&e)))
        })
        .collect()
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Matches a name against a shell pattern with `*`, `?` and bracket expressions such as
/// `[a-z]` and `[!0-9]`.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    match_from(&pattern, &name)
}

fn match_from(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => {
            (0..=name.len()).any(|skip| name.get(skip..).is_some_and(|tail| match_from(rest, tail)))
        }
        Some(('?', rest)) => name
            .split_first()
            .is_some_and(|(_, tail)| match_from(rest, tail)),
        Some(('[', rest)) => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            match match_bracket(rest, c) {
                Some((matched, after)) => matched && match_from(after, tail),
                // An unclosed bracket matches itself.
                None => c == '[' && match_from(rest, tail),
            }
        }
        Some((&p, rest)) => name
            .split_first()
            .is_some_and(|(&c, tail)| c == p && match_from(rest, tail)),
    }
}

/// Matches `c` against the bracket expression at the start of `pattern` (after `[`).
/// Returns whether it matched and the pattern after `]`, or `None` when there is no `]`.
fn match_bracket(pattern: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut rest) = match pattern.split_first() {
        Some(('!' | '^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let (&start, after) = rest.split_first()?;
        if start == ']' && !first {
            return Some((matched != negated, after));
        }
        first = false;
        if let ['-', end, tail @ ..] = after
            && *end != ']'
        {
            matched |= start <= c && c <= *end;
            rest = tail;
        } else {
            matched |= start == c;
            rest = after;
        }
    }
}

/// Sends a file, or a directory with its contents when `-r` was given.
fn send_path<'a, R, W, E>(
    io: &'a mut Io<R, W, E>,
    vfs: &'a Vfs,
    command: &'a Command,
    path: VPath,
    depth: usize,
) -> Pin<Box<dyn Future<Output = Result<(), Stop>> + Send + 'a>>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    Box::pin(async move {
        let name = path.file_name().unwrap_or("/").to_owned();
        if name.contains('\n') {
            return io
                .warn(&format!(
                    "{path}: skipped, the file name contains a newline"
                ))
                .await;
        }
        let meta = match vfs.metadata(&path).await {
            Ok(meta) => meta,
            Err(error) => return io.warn(&format!("{path}: {}", describe(&error))).await,
        };
        let times = Times {
            modified: meta.modified,
            accessed: meta.accessed,
        };
        match meta.kind {
            FileKind::Dir if !command.recursive => {
                io.warn(&format!("{path}: not a regular file")).await
            }
            FileKind::Dir => {
                if depth >= MAX_DEPTH {
                    return io
                        .warn(&format!(
                            "{path}: directory tree deeper than {MAX_DEPTH} levels"
                        ))
                        .await;
                }
                let entries = match vfs.read_dir(&path).await {
                    Ok(entries) => entries,
                    Err(error) => return io.warn(&format!("{path}: {}", describe(&error))).await,
                };
                if command.preserve && !send_record(io, &protocol::times_record(times)).await? {
                    return Ok(());
                }
                let name = if path.is_root() { "." } else { name.as_str() };
                if !send_record(io, &protocol::dir_record(meta.mode, name)).await? {
                    return Ok(());
                }
                let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                names.sort();
                for child in names {
                    match path.join(&child) {
                        Ok(child) => send_path(io, vfs, command, child, depth + 1).await?,
                        Err(error) => io.warn(&format!("{child}: {}", describe(&error))).await?,
                    }
                }
                send_record(io, protocol::END_RECORD).await?;
                Ok(())
            }
            FileKind::File => {
                send_file(io, vfs, command, &path, &name, meta.mode, meta.size, times).await
            }
            FileKind::Symlink | FileKind::Other => {
                io.warn(&format!("{path}: not a regular file")).await
            }
        }
    })
}

/// Sends a record and returns whether the client accepted it.
async fn send_record<R, W, E>(io: &mut Io<R, W, E>, record: &str) -> Result<bool, Stop>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    io.send(record.as_bytes()).await?;
    Ok(io.read_response().await? == Response::Ok)
}

#[allow(clippy::too_many_arguments)]
async fn send_file<R, W, E>(
    io: &mut Io<R, W, E>,
    vfs: &Vfs,
    command: &Command,
    path: &VPath,
    name: &str,
    mode: u32,
    size: u64,
    times: Times,
) -> Result<(), Stop>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let reader = match vfs.open_read(path).await {
        Ok(reader) => reader,
        Err(error) => return io.warn(&format!("{path}: {}", describe(&error))).await,
    };
    let mut file = match reader.into_stream(0).await {
        Ok(file) => file,
        Err(error) => return io.warn(&format!("{path}: {}", describe(&error))).await,
    };
    if command.preserve && !send_record(io, &protocol::times_record(times)).await? {
        return Ok(());
    }
    if !send_record(io, &protocol::file_record(mode, size, name)).await? {
        return Ok(());
    }

    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut left = size;
    let mut read_error = None;
    while left > 0 {
        let want = usize::try_from(left).map_or(buffer.len(), |l| l.min(buffer.len()));
        let chunk = buffer.get_mut(..want).unwrap_or_default();
        let n = if read_error.is_some() {
            0
        } else {
            match file.read(chunk).await {
                Ok(n) => n,
                Err(error) => {
                    read_error = Some(error.to_string());
                    0
                }
            }
        };
        if n == 0 {
            // The file shrank or could not be read: the announced size is still owed, so the
            // rest is sent as zeros and the file is reported as failed.
            read_error.get_or_insert_with(|| "file shrank while being sent".into());
            chunk.fill(0);
            io.writer.write_all(chunk).await?;
            left -= want as u64;
            continue;
        }
        io.writer
            .write_all(chunk.get(..n).unwrap_or_default())
            .await?;
        left -= n as u64;
    }
    match read_error {
        None => io.send_ok().await?,
        Some(reason) => io.warn(&format!("{path}: {reason}")).await?,
    }
    if io.read_response().await? == Response::Ok {
        debug!(path = ?path.as_str(), size_bytes = size, "file sent");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match() {
        assert!(wildcard_match("*.txt", "a.txt"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("[a-c]x", "bx"));
        assert!(!wildcard_match("[!a-c]x", "bx"));
        assert!(wildcard_match("[]]", "]"));
        assert!(wildcard_match("f[", "f["));
        assert!(!wildcard_match("*.txt", "a.txt.bak"));
        assert!(wildcard_match("*a*b*", "xxaxxbxx"));
    }
}
