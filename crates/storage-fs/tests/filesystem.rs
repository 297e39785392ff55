//! What only the filesystem backend does: symlinks, permissions, overwrite by rename, settings.

use figment::providers::{Format, Toml};
use std::os::unix::fs::PermissionsExt;
use storage_core::{Error, NameRule, Settings, Storage, Storages};
use storage_fs::{FileSystemStorage, FsOptions};

fn storage(options: FsOptions) -> (tempfile::TempDir, FileSystemStorage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage =
        FileSystemStorage::new("fs", FsOptions { location: dir.path().join("media"), ..options }).expect("storage");
    (dir, storage)
}

#[tokio::test]
async fn a_symlink_out_of_location_is_not_followed() {
    let (dir, s) = storage(FsOptions::default());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret.txt"), "private").expect("secret");
    s.save("keep.txt", "x".into()).await.expect("save");
    std::os::unix::fs::symlink(&outside, s.location().join("link")).expect("symlink dir");
    std::os::unix::fs::symlink(outside.join("secret.txt"), s.location().join("secret-link")).expect("symlink file");

    for name in ["link/secret.txt", "secret-link"] {
        let error = s.open(name).await.expect_err(name);
        assert!(matches!(&error, Error::SuspiciousName { rule: NameRule::EscapesRoot, .. }), "{name}: {error:?}");
        assert!(s.size(name).await.is_err());
    }
    assert!(s.delete("link/secret.txt").await.is_err());
    // Deleting a symlink removes the link, never what it leads to.
    s.delete("secret-link").await.expect("delete the link");
    assert!(!s.exists("secret-link").await.expect("exists"));
    let error = s.save("link/planted.txt", "x".into()).await.expect_err("save through symlink");
    assert!(matches!(error, Error::SuspiciousName { rule: NameRule::EscapesRoot, .. }), "{error:?}");
    assert!(s.save("link/new/dir/planted.txt", "x".into()).await.is_err());
    assert!(s.listdir("link").await.is_err());
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1, "something was written outside");
    assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).expect("secret"), "private");

    // A relative symlink that stays inside the location is fine; an absolute one is refused even when it
    // points inside, as the kernel resolves names beneath the location's handle.
    std::fs::create_dir(s.location().join("sub")).expect("sub");
    std::os::unix::fs::symlink("sub", s.location().join("inside")).expect("symlink");
    s.save("inside/ok.txt", "ok".into()).await.expect("save through inner symlink");
    assert!(s.location().join("sub/ok.txt").is_file());
    assert_eq!(s.open("inside/ok.txt").await.expect("open").read_all().await.expect("read"), "ok".as_bytes());
    std::os::unix::fs::symlink(s.location().join("sub"), s.location().join("absolute")).expect("symlink");
    let error = s.open("absolute/ok.txt").await.expect_err("absolute symlink");
    assert!(matches!(&error, Error::SuspiciousName { rule: NameRule::EscapesRoot, .. }), "{error:?}");
}

#[tokio::test]
async fn permissions_follow_the_settings() {
    let (_dir, s) = storage(FsOptions {
        file_permissions_mode: Some(0o640),
        directory_permissions_mode: Some(0o750),
        ..FsOptions::default()
    });
    s.save("a/b/c.txt", "x".into()).await.expect("save");
    let mode = |p: &str| std::fs::metadata(s.location().join(p)).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode("a/b/c.txt"), 0o640);
    assert_eq!(mode("a"), 0o750);
    assert_eq!(mode("a/b"), 0o750);

    // Without a mode, files are readable by others as usual (0o666 less the umask), not 0o600 temp files.
    let (_dir, s) = storage(FsOptions::default());
    s.save("plain.txt", "x".into()).await.expect("save");
    let mode = std::fs::metadata(s.location().join("plain.txt")).expect("metadata").permissions().mode();
    assert_eq!(mode & 0o600, 0o600);
    assert_ne!(mode & 0o044, 0, "mode {mode:o}");
}

#[tokio::test]
async fn file_overwrite_replaces_atomically() {
    let (_dir, s) = storage(FsOptions { file_overwrite: true, ..FsOptions::default() });
    assert_eq!(s.save("same.txt", "one".into()).await.expect("1"), "same.txt");
    let opened = s.open("same.txt").await.expect("open");
    assert_eq!(s.save("same.txt", "two, longer".into()).await.expect("2"), "same.txt");
    assert_eq!(s.open("same.txt").await.expect("open").read_all().await.expect("read"), "two, longer");
    // A reader that opened the old file still reads the old file whole.
    assert_eq!(opened.read_all().await.expect("read old"), "one");
    assert_eq!(s.listdir("").await.expect("listdir").1, ["same.txt"]);
}

#[test]
fn exactly_the_linked_backends_are_registered() {
    assert_eq!(
        storage_core::registered_paths().expect("registry"),
        ["storages.backends.fs.FileSystemStorage", "storages.backends.memory.InMemoryStorage"]
    );
}

#[tokio::test]
async fn configured_by_dotted_path_from_storages_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("storages.toml");
    let location = dir.path().join("uploads");
    std::fs::write(
        &config,
        format!(
            "[storages.default]\nbackend = \"django.core.files.storage.FileSystemStorage\"\nlocation = {:?}\nbase_url = \"https://media.example.com/\"\n",
            location.display().to_string()
        ),
    )
    .expect("config");
    let env = [("STORAGES__DEFAULT__FILE_PERMISSIONS_MODE".to_string(), "0604".to_string())];
    let storages = Storages::new(Settings::from_file_and_env(&config, env).expect("settings"));
    let storage = storages.get("default").expect("default");
    let name = storage.save("a b.txt", "hello".into()).await.expect("save");
    assert_eq!(std::fs::read_to_string(location.join("a b.txt")).expect("on disk"), "hello");
    let mode = std::fs::metadata(location.join("a b.txt")).expect("metadata").permissions().mode();
    assert_eq!(mode & 0o7777, 0o604);
    assert_eq!(storage.url(&name).await.expect("url"), "https://media.example.com/a%20b.txt");
}

#[test]
fn a_bad_mode_and_a_misspelt_key_are_named() {
    let settings = Settings::empty().merge(Toml::string(
        "[storages.media]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nfile_permissions_mode = \"0x9\"\n",
    ));
    let message = Storages::new(settings).get("media").expect_err("bad mode").to_string();
    assert!(message.contains("file_permissions_mode"), "{message}");
    assert!(message.contains("octal"), "{message}");

    let settings = Settings::empty().merge(Toml::string(
        "[storages.media]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nfile_permissions_mode = 644\n",
    ));
    let message = Storages::new(settings).get("media").expect_err("decimal mode").to_string();
    assert!(message.contains("644 is a decimal number (0o1204 in octal); write 0o644"), "{message}");
    for (mode, expected) in [
        ("-1", "-1 is negative"),
        ("444", "444 is a decimal number (0o674 in octal); write 0o444"),
        ("99999", "99999 (0o303237) is larger than the largest mode, 0o7777"),
        ("{ a = 1 }", "expected a permission mode"),
    ] {
        let settings = Settings::empty().merge(Toml::string(&format!(
            "[storages.media]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nfile_permissions_mode = {mode}\n"
        )));
        let message = Storages::new(settings).get("media").expect_err(mode).to_string();
        assert!(message.contains(expected) && !message.contains("untagged"), "{mode}: {message}");
    }

    let settings = Settings::empty().merge(Toml::string(
        "[storages.media]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocaton = \"x\"\n",
    ));
    let message = Storages::new(settings).get("media").expect_err("typo").to_string();
    assert!(message.contains("`locaton`") && message.contains("did you mean `location`?"), "{message}");
}

/// Names shaped like a save's temporary file are refused: listings hide such files and a save's cleanup could
/// remove them.
#[tokio::test]
async fn temporary_file_names_are_reserved() {
    let (_dir, storage) = storage(FsOptions::default());
    let reserved = |error: Error| matches!(error, Error::SuspiciousName { rule: NameRule::Reserved, .. });
    for name in [".storages-tmp-abc", "dir/.storages-tmp-x/file.txt"] {
        assert!(reserved(storage.save(name, "x".into()).await.expect_err("save")), "{name}");
        assert!(reserved(storage.open(name).await.expect_err("open")), "{name}");
        assert!(reserved(storage.delete(name).await.expect_err("delete")), "{name}");
        assert!(reserved(storage.open_write(name).await.expect_err("open_write")), "{name}");
    }
    assert!(reserved(storage.listdir(".storages-tmp-d").await.expect_err("listdir")));
    assert_eq!(storage.save("tmp-storages-.txt", "x".into()).await.expect("an ordinary name"), "tmp-storages-.txt");
}

/// Django's `path()`, reached from the application's storages by the backend's type: the file's place on disk
/// for a name (checked), and a clear error for an alias of another backend.
#[test]
fn the_path_of_a_name_is_reached_from_storages() {
    use figment::providers::{Format, Toml};
    use storage_core::{InMemoryStorage, Settings, Storages};
    let dir = tempfile::tempdir().expect("tempdir");
    let storages = Storages::new(Settings::empty().merge(Toml::string(&format!(
        "[storages.default]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocation = {:?}\n\
         [storages.memory]\nbackend = \"storages.backends.memory.InMemoryStorage\"\n\
         [storages.statics]\nbackend = \"django.contrib.staticfiles.storage.ManifestStaticFilesStorage\"\n\
         location = {:?}\n",
        dir.path().display().to_string(),
        dir.path().join("static").display().to_string()
    ))));
    let statics: std::sync::Arc<storage_fs::FileSystemStorage> =
        storages.get_as("statics").expect("behind the manifest");
    assert_eq!(statics.path("css/a.css").expect("path"), dir.path().join("static/css/a.css"));
    let fs: std::sync::Arc<storage_fs::FileSystemStorage> = storages.get_as("default").expect("the fs backend");
    assert_eq!(fs.path("a/b.txt").expect("path"), dir.path().join("a/b.txt"));
    assert!(matches!(fs.path("../b.txt"), Err(storage_core::Error::SuspiciousName { .. })));
    let memory: std::sync::Arc<InMemoryStorage> = storages.get_as("memory").expect("the memory backend");
    drop(memory);
    let error = storages.get_as::<storage_fs::FileSystemStorage>("memory").expect_err("another backend");
    assert!(error.to_string().contains("its backend is not storage_fs::FileSystemStorage"), "{error}");
}

/// A declared content type of any length comes back from `stat`.
#[tokio::test]
async fn a_long_declared_content_type_comes_back() {
    use storage_core::{SaveOptions, Storage};
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = storage_fs::FileSystemStorage::new(
        "media",
        storage_fs::FsOptions { location: dir.path().into(), ..storage_fs::FsOptions::default() },
    )
    .expect("storage");
    let long = format!("application/x-{}", "a".repeat(300));
    let name = storage.save_with("a.bin", "x".into(), &SaveOptions::new().content_type(&long)).await.expect("save");
    assert_eq!(storage.stat(&name).await.expect("stat").content_type, Some(long));
}
