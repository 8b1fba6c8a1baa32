use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGiXSX0bf3ZmHRD5C9y5sc9/HBSvnCIVX7e52Qpip2/D a@b";

fn store(text: &str) -> (tempfile::TempDir, Result<UserStore, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, text).unwrap();
    let store = UserStore::load(&path);
    (dir, store)
}

fn context(method: LoginMethod) -> LoginContext {
    LoginContext {
        ip: "192.0.2.10".parse().unwrap(),
        protocol: Protocol::Ssh,
        method,
    }
}

#[tokio::test]
async fn password_checked() {
    let hash = hash_password("pw").unwrap();
    let (_dir, store) = store(&format!(
        "[[users]]\nusername = \"alice\"\npassword = \"{hash}\"\nhome_dir = \"h\"\n"
    ));
    let store = store.unwrap();
    assert!(store.verify_password("alice", "pw").await.is_some());
    assert!(store.verify_password("alice", "bad").await.is_none());
    assert!(store.verify_password("bob", "pw").await.is_none());
}

#[test]
fn relative_home_from_file_folder() {
    let (dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"data/a\"\n");
    assert_eq!(
        store.unwrap().get("a").unwrap().home_dir,
        dir.path().join("data/a")
    );
}

#[test]
fn every_error_listed() {
    let (_dir, store) = store(
        "[[users]]\nusername = \"a b\"\nhome_dir = \"h\"\npassword = \"plain\"\n\
         public_keys = [\"ssh-dss AAAA\"]\nlogin_methods = [\"telepathy\"]\nstatus = \"maybe\"\n\
         expiration_date = \"tomorrow\"\nallowed_ip = [\"10.0.0.0/33\"]\ndenied_protocols = [\"HTTP\"]\n",
    );
    let Err(Error::Invalid { problems, .. }) = store else {
        panic!("expected an invalid file")
    };
    let text = problems.join("\n");
    for field in [
        "username",
        "password",
        "public_keys[0]",
        "login_methods",
        "status",
        "expiration_date",
        "allowed_ip",
        "denied_protocols",
    ] {
        assert!(
            text.contains(&format!(".{field}")),
            "{field} missing in:\n{text}"
        );
    }
}

#[test]
fn duplicate_user_rejected() {
    let (_dir, store) = store(
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\n[[users]]\nusername = \"a\"\nhome_dir = \"g\"\n",
    );
    assert!(
        store
            .unwrap_err()
            .to_string()
            .contains("duplicate user name")
    );
}

#[test]
fn unknown_key_rejected() {
    let (_dir, store) =
        store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nshell = \"/bin/sh\"\n");
    assert!(store.unwrap_err().to_string().contains("shell"));
}

#[test]
fn rules_applied() {
    let (_dir, store) = store(&format!(
        "[[users]]\nusername = \"off\"\nhome_dir = \"h\"\nstatus = \"disabled\"\n\
         [[users]]\nusername = \"old\"\nhome_dir = \"h\"\nexpiration_date = \"2001-01-01\"\n\
         [[users]]\nusername = \"lan\"\nhome_dir = \"h\"\nallowed_ip = [\"10.0.0.0/8\"]\n\
         [[users]]\nusername = \"noftp\"\nhome_dir = \"h\"\ndenied_protocols = [\"SSH\"]\n\
         [[users]]\nusername = \"twostep\"\nhome_dir = \"h\"\npublic_keys = [\"{KEY}\"]\nlogin_methods = [\"publickey+password\"]\n"
    ));
    let store = store.unwrap();
    let ctx = context(LoginMethod::Password);
    assert_eq!(
        store.authorize(&store.get("off").unwrap(), &ctx),
        Err(Denied::Disabled)
    );
    assert_eq!(
        store.authorize(&store.get("old").unwrap(), &ctx),
        Err(Denied::Expired)
    );
    assert_eq!(
        store.authorize(&store.get("lan").unwrap(), &ctx),
        Err(Denied::AddressNotAllowed)
    );
    assert_eq!(
        store.authorize(&store.get("noftp").unwrap(), &ctx),
        Err(Denied::ProtocolDenied)
    );
    let twostep = store.get("twostep").unwrap();
    assert!(twostep.requires_two_steps());
    assert_eq!(
        store.authorize(&twostep, &ctx),
        Err(Denied::MethodNotAllowed)
    );
    assert_eq!(
        store.authorize(&twostep, &context(LoginMethod::PublicKeyAndPassword)),
        Ok(())
    );
}

#[test]
fn session_limit_counts_guards() {
    let (_dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nmax_sessions = 1\n");
    let store = store.unwrap();
    let user = store.get("a").unwrap();
    let first = store.open_session(&user).unwrap();
    assert_eq!(
        store.open_session(&user).unwrap_err(),
        Denied::TooManySessions
    );
    drop(first);
    assert!(store.open_session(&user).is_ok());
}

#[test]
fn reload_keeps_old_on_error() {
    let (dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\n");
    let store = store.unwrap();
    std::fs::write(dir.path().join("users.toml"), "[[users]]\nusername = 5\n").unwrap();
    assert!(store.reload().is_err());
    assert!(store.get("a").is_some());
    std::fs::write(
        dir.path().join("users.toml"),
        "[[users]]\nusername = \"b\"\nhome_dir = \"h\"\n",
    )
    .unwrap();
    assert_eq!(store.reload().unwrap(), 1);
    assert!(store.get("a").is_none());
    assert!(store.get("b").is_some());
}

#[test]
fn public_key_matched_by_blob() {
    let (_dir, store) = store(&format!(
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\npublic_keys = [\"{KEY}\"]\n"
    ));
    let store = store.unwrap();
    let blob = AuthorizedKey::parse(KEY).unwrap().blob;
    assert!(store.verify_public_key("a", &blob).is_some());
    assert!(store.verify_public_key("b", &blob).is_none());
    assert!(store.verify_public_key("a", &blob[..10]).is_none());
}

#[test]
fn limits_default_to_unlimited() {
    let (_dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\n");
    let user = store.unwrap().get("a").unwrap();
    assert_eq!(user.quota_size, 0);
    assert_eq!(user.quota_files, 0);
    assert_eq!(user.upload_bandwidth, 0);
    assert_eq!(user.download_bandwidth, 0);
    assert!(!user.has_quota());
}

#[test]
fn negative_limits_rejected_with_key_and_value() {
    let (_dir, store) = store(
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = -1\nquota_files = -2\n\
         upload_bandwidth = -3\ndownload_bandwidth = -4\n",
    );
    let Err(Error::Invalid { problems, .. }) = store else {
        panic!("expected an invalid file")
    };
    let text = problems.join("\n");
    for (field, value) in [
        ("quota_size", -1),
        ("quota_files", -2),
        ("upload_bandwidth", -3),
        ("download_bandwidth", -4),
    ] {
        assert!(
            text.contains(&format!("users[0] (\"a\").{field} = {value}:")),
            "{field} missing in:\n{text}"
        );
    }
}

#[test]
fn limit_of_wrong_type_rejected() {
    let (_dir, store) =
        store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = \"10GB\"\n");
    assert!(store.unwrap_err().to_string().contains("quota_size"));
}

#[test]
fn sessions_share_limits() {
    let (_dir, store) = store(
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = 1000\n\
         upload_bandwidth = 2\ndownload_bandwidth = 3\n\
         [[users]]\nusername = \"b\"\nhome_dir = \"g\"\n",
    );
    let store = store.unwrap();
    let user = store.get("a").unwrap();
    let first = store.open_session(&user).unwrap();
    let second = store.open_session(&user).unwrap();
    let (one, two) = (first.limits(), second.limits());
    assert!(Arc::ptr_eq(
        one.quota.as_ref().unwrap(),
        two.quota.as_ref().unwrap()
    ));
    assert!(Arc::ptr_eq(
        one.upload.as_ref().unwrap(),
        two.upload.as_ref().unwrap()
    ));
    assert_eq!(one.upload.as_ref().unwrap().bytes_per_second(), 2048);
    assert_eq!(one.download.as_ref().unwrap().bytes_per_second(), 3072);
    let unlimited = store.open_session(&store.get("b").unwrap()).unwrap();
    assert!(unlimited.limits().quota.is_none());
    assert!(unlimited.limits().upload.is_none());
    assert!(unlimited.limits().download.is_none());
}

#[test]
fn limits_dropped_with_last_session() {
    let (_dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_files = 5\n");
    let store = store.unwrap();
    let user = store.get("a").unwrap();
    let first = store.open_session(&user).unwrap();
    let quota = Arc::clone(first.limits().quota.as_ref().unwrap());
    assert!(store.quota_usage("a").is_some());
    drop(first);
    assert!(store.quota_usage("a").is_none());
    let again = store.open_session(&user).unwrap();
    assert!(!Arc::ptr_eq(&quota, again.limits().quota.as_ref().unwrap()));
}

#[test]
fn reload_updates_shared_limits() {
    let (dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = 100\n");
    let store = store.unwrap();
    let first = store.open_session(&store.get("a").unwrap()).unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = 500\nupload_bandwidth = 1\n",
    )
    .unwrap();
    store.reload().unwrap();
    let second = store.open_session(&store.get("a").unwrap()).unwrap();
    let quota = first.limits().quota.as_ref().unwrap();
    assert_eq!(quota.limits(), (500, 0));
    assert!(second.limits().upload.is_some());
}

#[tokio::test]
async fn login_opens_vfs_with_quota_usage() {
    let (dir, store) = store("[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_size = 100\n");
    std::fs::create_dir_all(dir.path().join("h")).unwrap();
    std::fs::write(dir.path().join("h/f"), vec![0; 40]).unwrap();
    let store = Arc::new(store.unwrap());
    let hooks = ferry_hooks::Hooks::new(
        ferry_hooks::HooksConfig::default(),
        &ferry_hooks::HttpClientConfig::default(),
    )
    .unwrap();
    let logins = Logins::new(Arc::clone(&store), hooks, ferry_vfs::UploadMode::Atomic);
    let session = logins
        .open_session(store.get("a").unwrap(), &context(LoginMethod::Password))
        .await
        .unwrap();
    let usage = session.vfs.limits().quota.as_ref().unwrap().usage();
    assert_eq!(usage.bytes, 40);
    assert_eq!(usage.files, 1);
}

#[test]
fn reload_drops_removed_limits() {
    let (dir, store) = store(
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\nquota_files = 3\nupload_bandwidth = 4\n",
    );
    let store = store.unwrap();
    let first = store.open_session(&store.get("a").unwrap()).unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        "[[users]]\nusername = \"a\"\nhome_dir = \"h\"\n",
    )
    .unwrap();
    store.reload().unwrap();
    let second = store.open_session(&store.get("a").unwrap()).unwrap();
    assert!(second.limits().quota.is_none());
    assert!(second.limits().upload.is_none());
    assert!(first.limits().quota.is_some());
    assert!(store.quota_usage("a").is_none());
}
