//! The command line: configuration checks, password hashing, start-up errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn check_config(dir: &std::path::Path, config: &str) -> std::process::Output {
    let path = dir.join("ferry.toml");
    std::fs::write(&path, config).unwrap();
    if !dir.join("users.toml").exists() {
        std::fs::write(dir.join("users.toml"), "").unwrap();
    }
    let mut command = Command::new(ferry_bin());
    command.arg("check-config").arg("--config").arg(&path);
    run(command, Duration::from_secs(30))
}

const NO_SERVICES: &str =
    "[sftpd]\nbindings = []\n[ftpd]\nbindings = []\n[webdavd]\nbindings = []\n";

#[test]
fn hash_password_verifies() {
    let mut command = Command::new(ferry_bin());
    command.arg("hash-password");
    let output = run_with_input(command, b"correct horse\n", Duration::from_secs(30));
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let stored = ferry_users::StoredPassword::parse(hash).unwrap();
    assert!(stored.verify("correct horse"));
    assert!(!stored.verify("correct horse\n"));
}

#[test]
fn hash_password_rejects_empty() {
    let mut command = Command::new(ferry_bin());
    command.arg("hash-password");
    let output = run_with_input(command, b"", Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[common]\npost_login_scope = 7\npost_login_hook = \"hooks/login.sh\"\n\
         post_connect_hook = \"ftp://example.invalid/\"\n[httpclient]\ntimeout = 0\n{NO_SERVICES}"
    );
    let output = check_config(dir.path(), &config);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("common.post_login_scope = 7"), "{stderr}");
    assert!(
        stderr.contains("common.post_login_hook = \"hooks/login.sh\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("common.post_connect_hook = \"ftp://example.invalid/\""),
        "{stderr}"
    );
    assert!(stderr.contains("httpclient.timeout = 0"), "{stderr}");
}

#[test]
fn check_config_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[common]\nstate_dir = \"users.toml\"\n\
                  [sftpd]\nbindings = []\nhost_keys = [\"keys/missing\"]\n\
                  [ftpd]\nbindings = []\ncertificate_file = \"nope.pem\"\ncertificate_key_file = \"nope.key\"\n\
                  [webdavd]\nbindings = []\n";
    let output = check_config(dir.path(), config);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "sftpd.host_keys[0]",
        "ftpd.certificate_file",
        "ftpd.certificate_key_file",
        "common.state_dir",
    ] {
        assert!(stderr.contains(key), "{key} missing in: {stderr}");
    }
}

#[test]
fn check_config_rejects_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(
        dir.path(),
        &format!("[common]\npost_login_hok = \"\"\n{NO_SERVICES}"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("post_login_hok"), "{stderr}");
}

#[test]
fn check_config_rejects_missing_hook_program() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(
        dir.path(),
        &format!("[common]\npost_login_hook = \"/nonexistent/hook\"\n{NO_SERVICES}"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("common.post_login_hook = \"/nonexistent/hook\""),
        "{stderr}"
    );
}

#[test]
fn check_config_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[common]\npost_login_hook = \"https://siem:s3cret-pass@127.0.0.1:9/login?token=s3cret-query\"\n\
         [httpclient]\nheaders = [{{ key = \"Authorization\", value = \"Bearer s3cret-token\", url = \"https://127.0.0.1\" }}]\n\
         {NO_SERVICES}"
    );
    let output = check_config(dir.path(), &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("s3cret-token"), "{stdout}");
    assert!(!stdout.contains("s3cret-pass"), "{stdout}");
    assert!(!stdout.contains("s3cret-query"), "{stdout}");
    assert!(stdout.contains("Authorization"), "{stdout}");
}

#[test]
fn check_config_reports_bad_users_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\npassword = \"plain\"\n",
    )
    .unwrap();
    let output = check_config(dir.path(), NO_SERVICES);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("users[0] (\"a\").password"), "{stderr}");
}

#[test]
fn env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, NO_SERVICES).unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let mut command = Command::new(ferry_bin());
    command
        .env("FERRY_COMMON__POST_LOGIN_SCOPE", "9")
        .arg("check-config")
        .arg("--config")
        .arg(&path);
    let output = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("common.post_login_scope = 9"));
}

#[test]
fn unrelated_ferry_variables_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, NO_SERVICES).unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let mut command = Command::new(ferry_bin());
    command
        .env("FERRY_BAN_LIST", "/tmp/x")
        .arg("check-config")
        .arg("--config")
        .arg(&path);
    let output = run(command, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn users_add_refuses_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, NO_SERVICES).unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let key = dir.path().join("k");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let private = std::fs::read_to_string(&key).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    let output = users_command(
        &config,
        &["add", "carol", "--key", key.to_str().unwrap()],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("private key"), "{stderr}");
    assert!(
        !stderr.contains(&secret_line[..20]),
        "key material echoed: {stderr}"
    );
}

#[test]
fn missing_config_file_named() {
    let mut command = Command::new(ferry_bin());
    command.args(["serve", "--config", "/nonexistent/ferry.toml"]);
    let output = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ferry.toml"));
}

#[test]
fn shipped_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/ferry.toml");
    let mut command = Command::new(ferry_bin());
    command.arg("check-config").arg("--config").arg(config);
    let output = run(command, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn users_command(config: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut command = Command::new(ferry_bin());
    command.arg("users").arg("--config").arg(config).args(args);
    run_with_input(command, stdin, Duration::from_secs(30))
}

#[test]
fn users_commands_edit_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, NO_SERVICES).unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "# Operators keep notes here.\n\n[[users]]\n# the first account\nusername = \"alice\"\nhome_dir = \"a\"\n").unwrap();
    let key = dir.path().join("k");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());

    let key_arg = format!("{}.pub", key.display());
    let output = users_command(
        &config,
        &["add", "bob", "--password-stdin", "--key", &key_arg],
        b"bob secret\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("# Operators keep notes here."), "{text}");
    assert!(text.contains("# the first account"), "{text}");

    let store = ferry_users::UserStore::load(&users).unwrap();
    let bob = store.get("bob").unwrap();
    assert!(bob.password.as_ref().unwrap().verify("bob secret"));
    assert_eq!(bob.public_keys.len(), 1);
    assert_eq!(bob.home_dir, dir.path().join("state/data/bob"));

    let output = users_command(&config, &["add", "bob"], b"");
    assert_eq!(output.status.code(), Some(2), "a duplicate add must fail");

    let output = users_command(&config, &["passwd", "alice"], b"new pass\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = ferry_users::UserStore::load(&users).unwrap();
    assert!(
        store
            .get("alice")
            .unwrap()
            .password
            .as_ref()
            .unwrap()
            .verify("new pass")
    );

    let output = users_command(&config, &["list"], b"");
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("alice\thome=a\tpassword=yes\tkeys=0"),
        "{listing}"
    );
    let bob_home = dir.path().join("state/data/bob");
    let bob_line = format!("bob\thome={}\tpassword=yes\tkeys=1", bob_home.display());
    assert!(listing.contains(&bob_line), "{listing}");

    let output = users_command(&config, &["remove", "alice"], b"");
    assert!(output.status.success());
    let output = users_command(&config, &["remove", "alice"], b"");
    assert_eq!(output.status.code(), Some(2));
    let store = ferry_users::UserStore::load(&users).unwrap();
    assert!(store.get("alice").is_none());
    assert!(store.get("bob").is_some());
    assert!(
        std::fs::read_to_string(&users)
            .unwrap()
            .starts_with("# Operators keep notes here.")
    );
}

#[test]
fn users_add_rejects_invalid_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, NO_SERVICES).unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let output = users_command(&config, &["add", "a b"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("username"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("users.toml")).unwrap(),
        ""
    );
}
