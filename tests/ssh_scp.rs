//! Legacy SCP (`scp -O`) through the `ferry` binary: a directory tree up and down with modes
//! and times, and the rejection of commands other than scp.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn scp(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new("scp");
    command
        .arg("-O")
        .args(ssh_options(server.ssh_port()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(server.alice_key())
        .args(args);
    command
}

fn touch(path: &Path, secs: u64) {
    let status = Command::new("touch")
        .args(["-d", &format!("@{secs}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/drafts")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("readme.txt"), "read me\n").unwrap();
    std::fs::write(root.join("docs/a b.txt"), "spaces\n").unwrap();
    std::fs::write(root.join("docs/drafts/v1.md"), "# draft\n").unwrap();
    write_random_file(&root.join("docs/data.bin"), 5 * 1024 * 1024 + 7);
    let modes = [
        ("readme.txt", 0o644),
        ("docs/a b.txt", 0o600),
        ("docs/data.bin", 0o640),
        ("docs/drafts/v1.md", 0o755),
        ("docs/drafts", 0o700),
        ("docs", 0o750),
    ];
    for (path, mode) in modes {
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut secs = 1_600_000_000;
    for path in [
        "readme.txt",
        "docs/a b.txt",
        "docs/data.bin",
        "docs/drafts/v1.md",
        "docs/drafts",
        "docs",
        "empty",
    ] {
        touch(&root.join(path), secs);
        secs += 3_600;
    }
}

/// Rows of (relative path, is a directory, mode, mtime, SHA-256 of a file).
fn snapshot(root: &Path) -> Vec<(PathBuf, bool, u32, i64, String)> {
    let mut rows = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let digest = if meta.is_dir() {
                stack.push(path.clone());
                String::new()
            } else {
                sha256(&path)
            };
            rows.push((
                relative,
                meta.is_dir(),
                meta.mode() & 0o777,
                meta.mtime(),
                digest,
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn ssh_scp_tree_round_trip() {
    let server = Setup::default().only(&["ssh"]).start();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    make_tree(&tree);
    let expected = snapshot(&tree);

    let up = run(
        scp(
            &server,
            &["-r", "-p", tree.to_str().unwrap(), "alice@127.0.0.1:"],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(snapshot(&server.home("alice").join("tree")), expected);

    let back = local.path().join("back");
    let down = run(
        scp(
            &server,
            &["-r", "-p", "alice@127.0.0.1:tree", back.to_str().unwrap()],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(snapshot(&back), expected);
    assert_eq!(
        server.wait_events(2, Duration::from_millis(500)),
        vec![
            Event::new("alice", "publickey", 1, "SSH"),
            Event::new("alice", "publickey", 1, "SSH")
        ]
    );
}

#[test]
fn ssh_scp_missing_file_fails() {
    let server = Setup::default().only(&["ssh"]).start();
    let local = tempfile::tempdir().unwrap();
    let output = run(
        scp(
            &server,
            &[
                "alice@127.0.0.1:missing.txt",
                local.path().to_str().unwrap(),
            ],
        ),
        CLIENT_TIMEOUT,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("missing.txt: No such file or directory"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn ssh_other_commands_rejected() {
    let server = Setup::default().only(&["ssh"]).start();
    for remote in [
        vec!["cat", "/etc/passwd"],
        vec!["-s", "netconf"],
        vec!["-T"],
    ] {
        let mut command = Command::new("ssh");
        command
            .args(ssh_options(server.ssh_port()))
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(server.alice_key())
            .arg("alice@127.0.0.1")
            .args(&remote);
        let output = run(command, CLIENT_TIMEOUT);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{remote:?}: {stderr}");
        assert!(stderr.contains("is not available"), "{remote:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{remote:?}");
    }
}
