//! Whole WebDAV client suites against the built `ferry` binary: litmus and rclone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dav_util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use dav_util::*;

#[test]
fn litmus_groups_pass() {
    let server = Setup::default()
        .only(&["dav"])
        .hook(LoginHook::None)
        .start();
    let groups = ["basic", "copymove", "props", "locks", "http"];
    let mut command = Command::new("litmus");
    command
        .current_dir(server.root())
        .env("TESTS", groups.join(" "))
        .arg(format!("{}/", server.dav_url()))
        .args(["alice", ALICE_PASSWORD]);
    let output = run(command, Duration::from_secs(300));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    for group in groups {
        let summary = text
            .lines()
            .find(|line| line.contains(&format!("summary for `{group}'")))
            .unwrap_or_else(|| panic!("litmus did not run {group}:\n{text}"));
        assert!(summary.contains(" 0 failed"), "{summary}\n{text}");
    }
    assert!(output.status.success(), "{text}");
}

/// Builds a tree with nested folders, an empty file, a binary file and names that need
/// escaping in URLs and XML.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("with space #%")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("a.txt"), "a\n").unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::write(root.join("with space #%/b <&> 'q'.txt"), "b\n").unwrap();
    std::fs::write(root.join("sub/ünïcødé €.txt"), "ü\n").unwrap();
    write_random_file(&root.join("sub/deeper/bin.dat"), 3 << 20);
}

fn rclone(args: &[&str]) -> std::process::Output {
    let mut command = Command::new("rclone");
    command
        .args([
            "--config",
            "/dev/null",
            "--low-level-retries",
            "1",
            "--retries",
            "1",
        ])
        .args(args);
    run(command, Duration::from_secs(300))
}

#[test]
fn rclone_tree_round_trip() {
    let server = Setup::default().only(&["dav"]).start();
    let local = server.root().join("tree");
    make_tree(&local);

    let obscured = rclone(&["obscure", ALICE_PASSWORD]);
    assert!(obscured.status.success());
    let password = String::from_utf8_lossy(&obscured.stdout).trim().to_owned();
    let remote = format!(
        ":webdav,url='{}',user=alice,pass='{password}':up",
        server.dav_url()
    );

    let up = rclone(&[
        "copy",
        "--create-empty-src-dirs",
        local.to_str().unwrap(),
        &remote,
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let check = rclone(&["check", local.to_str().unwrap(), &remote]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("0 differences found"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let down = server.root().join("down");
    let copy_down = rclone(&[
        "copy",
        "--create-empty-src-dirs",
        &remote,
        down.to_str().unwrap(),
    ]);
    assert!(
        copy_down.status.success(),
        "{}",
        String::from_utf8_lossy(&copy_down.stderr)
    );
    let check_down = rclone(&["check", local.to_str().unwrap(), down.to_str().unwrap()]);
    assert!(
        check_down.status.success(),
        "{}",
        String::from_utf8_lossy(&check_down.stderr)
    );
    assert_eq!(
        sha256(&down.join("sub/deeper/bin.dat")),
        sha256(&local.join("sub/deeper/bin.dat"))
    );
    assert_eq!(names_in(&server.home("alice").join("up")), names_in(&local));
    assert!(down.join("empty dir").is_dir());
}
