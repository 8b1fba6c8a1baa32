//! Running a hook program: no shell, no arguments, the server's environment plus the event's
//! variables, and a time limit enforced on the program's whole process group.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Why a hook program did not finish with exit status 0.
#[derive(Debug)]
pub(crate) enum ProgramFailure {
    Spawn(std::io::Error),
    /// A non-zero exit, with the start of what the program wrote to stderr.
    Exit(std::process::ExitStatus, String),
    TimedOut(Duration),
    Wait(std::io::Error),
}

impl std::fmt::Display for ProgramFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgramFailure::Spawn(e) => write!(f, "failed to start: {e}"),
            ProgramFailure::Exit(status, stderr) if stderr.is_empty() => {
                write!(f, "exited with {status}")
            }
            ProgramFailure::Exit(status, stderr) => {
                write!(f, "exited with {status}; stderr: {stderr}")
            }
            ProgramFailure::TimedOut(limit) => {
                write!(
                    f,
                    "timed out after {}s; its process group was killed",
                    limit.as_secs_f32()
                )
            }
            ProgramFailure::Wait(e) => write!(f, "failed to wait for it: {e}"),
        }
    }
}

/// The most of a failing program's stderr that is kept for the log.
const STDERR_LIMIT: usize = 1024;

/// Runs `program` with `env` added to the inherited environment and waits for it.
///
/// The program leads a new process group, so that on timeout the group is killed with
/// SIGKILL, which also ends background processes it started unless they left the group.
/// The start of its stderr is kept so that a failure can be logged with its reason.
pub(crate) async fn run(
    program: &Path,
    env: &[(&'static str, String)],
    timeout: Duration,
) -> Result<(), ProgramFailure> {
    let mut command = tokio::process::Command::new(program);
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(ProgramFailure::Spawn)?;
    let pid = child.id();
    let stderr = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(read_start(pipe)));

    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            if let Some(task) = stderr {
                task.abort();
            }
            Ok(())
        }
        Ok(Ok(status)) => {
            // A background process the program started may keep the pipe open, so the
            // read gets only a moment after the exit.
            let text = match stderr {
                Some(task) => tokio::time::timeout(Duration::from_millis(200), task)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => String::new(),
            };
            Err(ProgramFailure::Exit(status, text))
        }
        Ok(Err(e)) => Err(ProgramFailure::Wait(e)),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                // The group id equals the leader's pid because of `process_group(0)`. The
                // group may already be gone, which is fine.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            // Reap the leader so it does not linger as a zombie.
            let _ = child.wait().await;
            Err(ProgramFailure::TimedOut(timeout))
        }
    }
}

/// Reads up to [`STDERR_LIMIT`] bytes, then drains the rest so the program never blocks on a
/// full pipe. Returns the text with line breaks shown as spaces, for one log line.
async fn read_start(mut pipe: tokio::process::ChildStderr) -> String {
    use tokio::io::AsyncReadExt;

    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDERR_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn env_reaches_program() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = script(
            dir.path(),
            "hook",
            &format!("echo \"$FOO\" > {}", out.display()),
        );
        run(&hook, &[("FOO", "bar".into())], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "bar\n");
    }

    #[tokio::test]
    async fn nonzero_exit_reported() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(
            dir.path(),
            "hook",
            "echo 'cannot write /var/lib/x' >&2\nexit 3",
        );
        let err = run(&hook, &[], Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&err, ProgramFailure::Exit(s, _) if s.code() == Some(3)));
        assert!(
            err.to_string().ends_with("stderr: cannot write /var/lib/x"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_background_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The script starts a background sleeper and then waits; both must die.
        let hook = script(
            dir.path(),
            "hook",
            &format!("sleep 300 & echo $! > {}\nwait", pidfile.display()),
        );
        let err = run(&hook, &[], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, ProgramFailure::TimedOut(_)), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Give the kernel a moment to deliver SIGKILL, then check that the pid is gone or a
        // zombie (reaped by init later).
        let mut alive = true;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "background child {pid} survived the timeout");
    }

    #[tokio::test]
    async fn missing_program_reported() {
        let err = run(Path::new("/nonexistent/hook"), &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ProgramFailure::Spawn(_)));
    }
}
