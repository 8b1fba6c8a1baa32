use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    outside: PathBuf,
    home: PathBuf,
    vfs: Vfs,
}

async fn fixture(mode: UploadMode) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    let home = dir.path().join("home");
    let vfs = Vfs::open(&home, Permissions::default(), mode)
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        outside,
        home,
        vfs,
    }
}

fn p(s: &str) -> VPath {
    VPath::parse(s).unwrap()
}

async fn read_all(vfs: &Vfs, path: &str) -> Result<Vec<u8>, VfsError> {
    let reader = vfs.open_read(&p(path)).await?;
    reader.read_at(0, 1 << 20).await
}

#[tokio::test]
async fn home_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(UploadMode::Atomic).await;
    let mode = std::fs::metadata(&f.home).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn dotdot_cannot_leave_home() {
    let f = fixture(UploadMode::Atomic).await;
    let err = read_all(&f.vfs, "/../secret.txt").await.unwrap_err();
    assert!(matches!(err, VfsError::NotFound), "{err:?}");
    let err = read_all(&f.vfs, "../../secret.txt").await.unwrap_err();
    assert!(matches!(err, VfsError::NotFound), "{err:?}");
}

#[tokio::test]
async fn absolute_server_path_stays_inside() {
    let f = fixture(UploadMode::Atomic).await;
    let err = read_all(&f.vfs, f.outside.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::NotFound), "{err:?}");
}

#[tokio::test]
async fn planted_symlink_outside_refused() {
    let f = fixture(UploadMode::Atomic).await;
    std::os::unix::fs::symlink(&f.outside, f.home.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", f.home.join("rel-link")).unwrap();
    std::os::unix::fs::symlink(f.outside.parent().unwrap(), f.home.join("dir-link")).unwrap();
    for path in ["/abs-link", "/rel-link", "/dir-link/secret.txt"] {
        let err = read_all(&f.vfs, path).await.unwrap_err();
        assert!(matches!(err, VfsError::PermissionDenied), "{path}: {err:?}");
    }
    let err = f
        .vfs
        .open_write(&p("/dir-link/new.txt"), WriteOptions::replace())
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::PermissionDenied), "{err:?}");
    assert!(!f.outside.parent().unwrap().join("new.txt").exists());
}

#[tokio::test]
async fn symlink_escape_via_api_refused() {
    let f = fixture(UploadMode::Atomic).await;
    let err = f.vfs.symlink("../secret.txt", &p("/l")).await.unwrap_err();
    assert!(matches!(err, VfsError::PermissionDenied), "{err:?}");
    // An absolute target names a path in the home, never the server's root.
    f.vfs
        .symlink(f.outside.to_str().unwrap(), &p("/abs"))
        .await
        .unwrap();
    let stored = std::fs::read_link(f.home.join("abs")).unwrap();
    assert!(stored.is_relative(), "{stored:?}");
    let err = read_all(&f.vfs, "/abs").await.unwrap_err();
    assert!(matches!(err, VfsError::NotFound), "{err:?}");
}

#[tokio::test]
async fn symlink_inside_works() {
    let f = fixture(UploadMode::Atomic).await;
    f.vfs.create_dir(&p("/d")).await.unwrap();
    std::fs::write(f.home.join("d/target.txt"), "hello").unwrap();
    f.vfs
        .symlink("target.txt", &p("/d/link.txt"))
        .await
        .unwrap();
    assert_eq!(read_all(&f.vfs, "/d/link.txt").await.unwrap(), b"hello");
    assert_eq!(
        f.vfs.read_link(&p("/d/link.txt")).await.unwrap(),
        "/d/target.txt"
    );
    f.vfs.symlink("/d/target.txt", &p("/top")).await.unwrap();
    assert_eq!(read_all(&f.vfs, "/top").await.unwrap(), b"hello");
    assert_eq!(
        std::fs::read_link(f.home.join("top")).unwrap(),
        PathBuf::from("d/target.txt")
    );
}

#[tokio::test]
async fn encoded_names_are_literal() {
    let f = fixture(UploadMode::Atomic).await;
    // Percent escapes and look-alike dots are ordinary names here; only WebDAV decodes
    // percent escapes, before the path reaches this layer.
    for name in [
        "%2e%2e",
        "..%2fsecret.txt",
        "\u{ff0e}\u{ff0e}",
        "..\\secret.txt",
    ] {
        let path = VPath::resolve(&VPath::root(), name).unwrap();
        let w = f
            .vfs
            .open_write(&path, WriteOptions::replace())
            .await
            .unwrap();
        w.write_at(0, b"x".to_vec()).await.unwrap();
        w.commit().await.unwrap();
        assert!(f.home.join(name).exists(), "{name}");
    }
    assert_eq!(std::fs::read_to_string(&f.outside).unwrap(), "top secret");
}

#[tokio::test]
async fn atomic_upload_invisible_until_commit() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("a.txt"), "old").unwrap();
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, b"new content".to_vec()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.home.join("a.txt")).unwrap(),
        "old"
    );
    let names: Vec<String> = f
        .vfs
        .read_dir(&VPath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["a.txt".to_owned()]);
    w.commit().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.home.join("a.txt")).unwrap(),
        "new content"
    );
    assert_eq!(std::fs::read_dir(&f.home).unwrap().count(), 1);
}

#[tokio::test]
async fn atomic_upload_dropped_keeps_old() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("a.txt"), "old").unwrap();
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, b"partial".to_vec()).await.unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_to_string(f.home.join("a.txt")).unwrap(),
        "old"
    );
    assert_eq!(
        std::fs::read_dir(&f.home).unwrap().count(),
        1,
        "temporary file left behind"
    );
}

#[tokio::test]
async fn atomic_resume_keeps_prefix() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("r.bin"), "hello ").unwrap();
    let w = f
        .vfs
        .open_write(&p("/r.bin"), WriteOptions::resume())
        .await
        .unwrap();
    assert_eq!(w.metadata().await.unwrap().size, 6);
    w.write_at(6, b"world".to_vec()).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.home.join("r.bin")).unwrap(),
        "hello world"
    );
}

#[tokio::test]
async fn atomic_append_goes_to_end() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("log"), "a").unwrap();
    let options = WriteOptions {
        create: true,
        append: true,
        ..WriteOptions::default()
    };
    let w = f.vfs.open_write(&p("/log"), options).await.unwrap();
    w.write_at(0, b"b".to_vec()).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(f.home.join("log")).unwrap(), "ab");
}

#[tokio::test]
async fn exclusive_create_fails_on_existing() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("e"), "x").unwrap();
    let options = WriteOptions {
        create: true,
        exclusive: true,
        ..WriteOptions::default()
    };
    let err = f.vfs.open_write(&p("/e"), options).await.unwrap_err();
    assert!(matches!(err, VfsError::AlreadyExists), "{err:?}");
}

#[tokio::test]
async fn standard_mode_writes_in_place() {
    let f = fixture(UploadMode::Standard).await;
    let w = upload(&f.vfs, "/s.txt").await;
    w.write_at(0, b"abc".to_vec()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.home.join("s.txt")).unwrap(),
        "abc"
    );
    w.commit().await.unwrap();
}

#[tokio::test]
async fn temp_names_unreachable() {
    let f = fixture(UploadMode::Atomic).await;
    let name = format!("{UPLOAD_TEMP_PREFIX}0000000000000001");
    std::fs::write(f.home.join(&name), "x").unwrap();
    let err = read_all(&f.vfs, &format!("/{name}")).await.unwrap_err();
    assert!(matches!(err, VfsError::NotFound), "{err:?}");
}

#[tokio::test]
async fn rename_without_replace_keeps_target() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("a"), "a").unwrap();
    std::fs::write(f.home.join("b"), "b").unwrap();
    let err = f.vfs.rename(&p("/a"), &p("/b"), false).await.unwrap_err();
    assert!(matches!(err, VfsError::AlreadyExists), "{err:?}");
    f.vfs.rename(&p("/a"), &p("/b"), true).await.unwrap();
    assert_eq!(std::fs::read_to_string(f.home.join("b")).unwrap(), "a");
}

#[tokio::test]
async fn permissions_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let all = vec!["*".to_owned()];
    let read = vec!["list".to_owned(), "download".to_owned()];
    let perms = Permissions::from_rules([("/", all.as_slice()), ("/ro", read.as_slice())]).unwrap();
    let vfs = Vfs::open(&dir.path().join("h"), perms, UploadMode::Atomic)
        .await
        .unwrap();
    // A path gets the rules of its own longest prefix, so "/ro" itself is read-only too.
    let err = vfs.create_dir(&p("/ro")).await.unwrap_err();
    assert!(matches!(err, VfsError::PermissionDenied), "{err:?}");
    std::fs::create_dir(dir.path().join("h/ro")).unwrap();
    let err = vfs
        .open_write(&p("/ro/x"), WriteOptions::replace())
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::PermissionDenied), "{err:?}");
    let err = vfs.create_dir(&p("/ro/sub")).await.unwrap_err();
    assert!(matches!(err, VfsError::PermissionDenied), "{err:?}");
    assert!(vfs.read_dir(&p("/ro")).await.unwrap().is_empty());
}

#[tokio::test]
async fn statvfs_reports_space() {
    let f = fixture(UploadMode::Atomic).await;
    let stats = f.vfs.statvfs(&VPath::root()).await.unwrap();
    assert!(stats.blocks > 0);
    assert!(stats.block_size > 0);
}

async fn quota_fixture(mode: UploadMode, max_bytes: u64, max_files: u64) -> (Fixture, Arc<Quota>) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("sub")).unwrap();
    std::fs::write(home.join("a.txt"), vec![b'a'; 100]).unwrap();
    std::fs::write(home.join("sub/b.txt"), vec![b'b'; 50]).unwrap();
    let leftover = format!("{UPLOAD_TEMP_PREFIX}00000000000000ff");
    std::fs::write(home.join(leftover), vec![0; 1000]).unwrap();
    let quota = Arc::new(Quota::new(max_bytes, max_files));
    let limits = Limits {
        quota: Some(Arc::clone(&quota)),
        ..Limits::default()
    };
    let vfs = Vfs::open_with_limits(&home, Permissions::default(), mode, limits)
        .await
        .unwrap();
    let fixture = Fixture {
        outside: dir.path().join("secret.txt"),
        _dir: dir,
        home,
        vfs,
    };
    (fixture, quota)
}

/// Opens `path` for a plain upload that replaces it.
async fn upload(vfs: &Vfs, path: &str) -> FileWriter {
    vfs.open_write(&p(path), WriteOptions::replace())
        .await
        .unwrap()
}

fn usage(bytes: u64, files: u64) -> QuotaUsage {
    QuotaUsage { bytes, files }
}

fn temp_files(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(UPLOAD_TEMP_PREFIX) && !n.ends_with("ff"))
        .collect()
}

#[tokio::test]
async fn quota_walk_skips_uploads_in_progress() {
    let (_f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_walk_runs_once_per_quota() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    let limits = f.vfs.limits().clone();
    Vfs::open_with_limits(&f.home, Permissions::default(), UploadMode::Atomic, limits)
        .await
        .unwrap();
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_write_past_size_fails() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let w = upload(&f.vfs, "/new.txt").await;
    w.write_at(0, vec![1; 50]).await.unwrap();
    let err = w.write_at(50, vec![1; 1]).await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    drop(w);
    assert!(!f.home.join("new.txt").exists());
    assert!(temp_files(&f.home).is_empty());
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_upload_counted_on_commit() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    let w = upload(&f.vfs, "/new.txt").await;
    w.write_at(0, vec![1; 30]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(quota.usage(), usage(180, 3));
}

#[tokio::test]
async fn quota_files_checked_at_open() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 0, 2).await;
    let err = f
        .vfs
        .open_write(&p("/third.txt"), WriteOptions::replace())
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    // Replacing an existing file needs no new slot.
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, vec![2; 10]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(quota.usage(), usage(60, 2));
}

#[tokio::test]
async fn quota_overwrite_reuses_replaced_space() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 150, 10).await;
    let err = f
        .vfs
        .open_write(&p("/new.txt"), WriteOptions::replace())
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, vec![3; 100]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(std::fs::read(f.home.join("a.txt")).unwrap(), vec![3; 100]);
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_failed_overwrite_keeps_old_file() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 160, 10).await;
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, vec![4; 110]).await.unwrap();
    let err = w.write_at(110, vec![4; 1]).await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    drop(w);
    assert_eq!(
        std::fs::read(f.home.join("a.txt")).unwrap(),
        vec![b'a'; 100]
    );
    assert!(temp_files(&f.home).is_empty());
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_resume_and_append_counted() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    let w = f
        .vfs
        .open_write(&p("/a.txt"), WriteOptions::resume())
        .await
        .unwrap();
    w.write_at(100, vec![5; 20]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(quota.usage(), usage(170, 2));
    let append = WriteOptions {
        append: true,
        ..WriteOptions::resume()
    };
    let w = f.vfs.open_write(&p("/a.txt"), append).await.unwrap();
    w.write_at(0, vec![5; 5]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(std::fs::metadata(f.home.join("a.txt")).unwrap().len(), 125);
    assert_eq!(quota.usage(), usage(175, 2));
}

#[tokio::test]
async fn quota_standard_mode_keeps_interrupted_upload() {
    let (f, quota) = quota_fixture(UploadMode::Standard, 1000, 10).await;
    let w = upload(&f.vfs, "/new.txt").await;
    w.write_at(0, vec![6; 40]).await.unwrap();
    drop(w);
    assert_eq!(quota.usage(), usage(190, 3));
}

#[tokio::test]
async fn quota_delete_rename_copy_truncate() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    f.vfs.copy_file(&p("/a.txt"), &p("/c.txt")).await.unwrap();
    assert_eq!(quota.usage(), usage(250, 3));
    f.vfs
        .copy_file(&p("/sub/b.txt"), &p("/c.txt"))
        .await
        .unwrap();
    assert_eq!(quota.usage(), usage(200, 3));
    f.vfs
        .rename(&p("/sub/b.txt"), &p("/a.txt"), true)
        .await
        .unwrap();
    assert_eq!(quota.usage(), usage(100, 2));
    f.vfs.set_len(&p("/a.txt"), 80).await.unwrap();
    assert_eq!(quota.usage(), usage(130, 2));
    f.vfs.remove_file(&p("/c.txt")).await.unwrap();
    assert_eq!(quota.usage(), usage(80, 1));
}

#[tokio::test]
async fn quota_copy_and_extension_must_fit() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let err = f
        .vfs
        .copy_file(&p("/a.txt"), &p("/c.txt"))
        .await
        .unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    assert!(!f.home.join("c.txt").exists());
    let err = f.vfs.set_len(&p("/a.txt"), 151).await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    assert_eq!(std::fs::metadata(f.home.join("a.txt")).unwrap().len(), 100);
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_stream_write_past_size_fails() {
    use tokio::io::AsyncWriteExt;
    let (f, quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let w = upload(&f.vfs, "/s.txt").await;
    let mut stream = w.stream().unwrap();
    stream.write_all(&[7; 50]).await.unwrap();
    let error = stream.write_all(&[7; 1]).await.unwrap_err();
    assert!(matches!(VfsError::from(error), VfsError::QuotaExceeded));
    drop(stream);
    drop(w);
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn quota_concurrent_uploads_share_limit() {
    let (f, _quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let first = f
        .vfs
        .open_write(&p("/one"), WriteOptions::replace())
        .await
        .unwrap();
    let second = f
        .vfs
        .open_write(&p("/two"), WriteOptions::replace())
        .await
        .unwrap();
    first.write_at(0, vec![8; 30]).await.unwrap();
    let err = second.write_at(0, vec![8; 30]).await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
}

#[tokio::test]
async fn unlimited_view_tracks_nothing() {
    let f = fixture(UploadMode::Atomic).await;
    assert!(f.vfs.limits().quota.is_none());
    assert!(f.vfs.limits().upload.is_none());
    assert!(f.vfs.limits().download.is_none());
}

#[tokio::test]
async fn download_stream_waits_for_limit() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("big"), vec![9; 100_000]).unwrap();
    let limits = Limits {
        download: Some(Arc::new(RateLimit::new(200_000))),
        ..Limits::default()
    };
    let vfs = Vfs::open_with_limits(&home, Permissions::default(), UploadMode::Atomic, limits)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut stream = vfs
        .open_read(&p("/big"))
        .await
        .unwrap()
        .into_stream(0)
        .await
        .unwrap();
    // Exactly the file's size and no read at the end, as a client that knows the size does.
    let mut data = vec![0; 100_000];
    stream.read_exact(&mut data).await.unwrap();
    // 100 kB at 200 kB/s, less the 50 kB burst: at least 0.25 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(230));
}

#[tokio::test]
async fn upload_stream_waits_for_limit() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        upload: Some(Arc::new(RateLimit::new(200_000))),
        ..Limits::default()
    };
    let vfs = Vfs::open_with_limits(
        &dir.path().join("h"),
        Permissions::default(),
        UploadMode::Atomic,
        limits,
    )
    .await
    .unwrap();
    let w = vfs
        .open_write(&p("/up"), WriteOptions::replace())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut stream = w.stream().unwrap();
    stream.write_all(&[1; 100_000]).await.unwrap();
    stream.flush().await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(230));
    drop(stream);
    w.commit().await.unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("h/up")).unwrap().len(),
        100_000
    );
}

#[tokio::test]
async fn upload_write_waits_for_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        upload: Some(Arc::new(RateLimit::new(200_000))),
        ..Limits::default()
    };
    let vfs = Vfs::open_with_limits(
        &dir.path().join("h"),
        Permissions::default(),
        UploadMode::Atomic,
        limits,
    )
    .await
    .unwrap();
    let w = vfs
        .open_write(&p("/up"), WriteOptions::replace())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..10u64 {
        w.write_at(i * 10_000, vec![1; 10_000]).await.unwrap();
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    w.commit().await.unwrap();
}

#[tokio::test]
async fn quota_failed_write_blocks_commit() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let w = upload(&f.vfs, "/a.txt").await;
    w.write_at(0, vec![1; 40]).await.unwrap();
    let err = w.write_at(150, vec![1; 10]).await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    let err = w.commit().await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    assert_eq!(
        std::fs::read(f.home.join("a.txt")).unwrap(),
        vec![b'a'; 100]
    );
    assert!(temp_files(&f.home).is_empty());
    assert_eq!(quota.usage(), usage(150, 2));
}

#[tokio::test]
async fn symlink_upward_rejected() {
    let f = fixture(UploadMode::Atomic).await;
    f.vfs.create_dir(&p("/a")).await.unwrap();
    f.vfs.create_dir(&p("/b")).await.unwrap();
    for target in ["../b", "/b", "/a", "."] {
        let err = f.vfs.symlink(target, &p("/a/l")).await.unwrap_err();
        assert!(
            matches!(err, VfsError::PermissionDenied),
            "{target}: {err:?}"
        );
    }
    f.vfs.symlink("/a/sub/x", &p("/a/down")).await.unwrap();
    assert_eq!(
        std::fs::read_link(f.home.join("a/down")).unwrap(),
        PathBuf::from("sub/x")
    );
}

#[tokio::test]
async fn overwrite_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(UploadMode::Atomic).await;
    let target = f.home.join("private.txt");
    std::fs::write(&target, "old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    for options in [WriteOptions::replace(), WriteOptions::resume()] {
        let w = f.vfs.open_write(&p("/private.txt"), options).await.unwrap();
        w.write_at(0, b"new".to_vec()).await.unwrap();
        w.commit().await.unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{options:?}");
    }
}

#[tokio::test]
async fn failed_write_not_published() {
    let f = fixture(UploadMode::Atomic).await;
    std::fs::write(f.home.join("keep.txt"), "good").unwrap();
    let w = f
        .vfs
        .open_write(&p("/keep.txt"), WriteOptions::replace())
        .await
        .unwrap();
    w.write_at(0, b"partial".to_vec()).await.unwrap();
    // A write past the largest file size fails (EFBIG or EINVAL), as a full disk would.
    assert!(w.write_at(u64::MAX - 1, b"xy".to_vec()).await.is_err());
    assert!(w.commit().await.is_err());
    assert_eq!(
        std::fs::read_to_string(f.home.join("keep.txt")).unwrap(),
        "good"
    );
    assert_eq!(
        std::fs::read_dir(&f.home).unwrap().count(),
        1,
        "temporary file left behind"
    );
}

#[tokio::test]
async fn resume_keeps_sparse_file_sparse() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture(UploadMode::Atomic).await;
    let sparse = std::fs::File::create(f.home.join("sparse")).unwrap();
    sparse.set_len(256 << 20).unwrap();
    drop(sparse);
    let w = f
        .vfs
        .open_write(&p("/sparse"), WriteOptions::resume())
        .await
        .unwrap();
    w.write_at(256 << 20, b"end".to_vec()).await.unwrap();
    w.commit().await.unwrap();
    let meta = std::fs::metadata(f.home.join("sparse")).unwrap();
    assert_eq!(meta.len(), (256 << 20) + 3);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "{} bytes allocated for a sparse file",
        meta.blocks() * 512
    );
}

#[tokio::test]
async fn quota_overwrite_loan_void_after_rename() {
    // 150 bytes used (a.txt 100, sub/b.txt 50) of 200. Overwriting a.txt may reuse its 100
    // bytes, but not once a.txt was renamed away: then the upload must fit on its own.
    let (f, quota) = quota_fixture(UploadMode::Atomic, 200, 10).await;
    let w = upload(&f.vfs, "/a.txt").await;
    f.vfs
        .rename(&p("/a.txt"), &p("/kept.txt"), false)
        .await
        .unwrap();
    w.write_at(0, vec![b'n'; 100]).await.unwrap();
    let err = w.commit().await.unwrap_err();
    assert!(matches!(err, VfsError::QuotaExceeded), "{err:?}");
    assert!(!f.home.join("a.txt").exists());
    assert_eq!(quota.usage(), usage(150, 2));
    assert!(temp_files(&f.home).is_empty());
}

#[tokio::test]
async fn quota_overwrite_after_delete_counts_once() {
    let (f, quota) = quota_fixture(UploadMode::Atomic, 1000, 10).await;
    let w = upload(&f.vfs, "/a.txt").await;
    f.vfs.remove_file(&p("/a.txt")).await.unwrap();
    assert_eq!(quota.usage(), usage(50, 1));
    w.write_at(0, vec![b'n'; 30]).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(quota.usage(), usage(80, 2));
}
