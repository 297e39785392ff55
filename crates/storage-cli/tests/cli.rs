//! The `storages` command as a user runs it: the embedded default, collectstatic's skipping, the manifest, bad
//! input, and S3 on moto with 2,000 files.

use std::path::Path;
use std::process::{Command, Output};

mod support;

use support::{example_site, server_var as var, stderr, stdout, storages};

#[test]
fn collectstatic_on_the_embedded_default_then_skips_what_is_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = example_site(dir.path());
    let site = site.to_str().expect("utf-8 path");

    let first = storages(dir.path(), &["collectstatic", site], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first).trim(), "6 static files copied, 0 unmodified.");
    assert_eq!(
        std::fs::read(dir.path().join("staticfiles/css/app.css")).expect("collected"),
        std::fs::read(Path::new(site).join("css/app.css")).expect("source")
    );

    let second = storages(dir.path(), &["collectstatic", site], &[]);
    assert_eq!(stdout(&second).trim(), "0 static files copied, 6 unmodified.");

    std::fs::write(Path::new(site).join("js/app.js"), "console.log('changed');\n").expect("change");
    let third = storages(dir.path(), &["collectstatic", site], &[]);
    assert_eq!(stdout(&third).trim(), "1 static file copied, 5 unmodified.");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("staticfiles/js/app.js")).expect("read"),
        "console.log('changed');\n"
    );
    let listed = std::fs::read_dir(dir.path().join("staticfiles/js")).expect("js").count();
    assert_eq!(listed, 1, "the changed file was replaced, not saved beside the old one");

    // --dry-run says what it would do and changes nothing; --clear removes what the sources no longer have.
    std::fs::remove_file(Path::new(site).join("robots.txt")).expect("remove");
    let dry = storages(dir.path(), &["collectstatic", site, "--clear", "--dry-run"], &[]);
    assert_eq!(
        stdout(&dry).trim(),
        "would delete robots.txt\n0 static files would be copied, 5 unmodified, 1 would be deleted."
    );
    assert!(dir.path().join("staticfiles/robots.txt").exists());
    let clear = storages(dir.path(), &["collectstatic", site, "--clear"], &[]);
    assert_eq!(stdout(&clear).trim(), "0 static files copied, 5 unmodified, 1 deleted.");
    assert!(!dir.path().join("staticfiles/robots.txt").exists());
}

#[test]
fn the_manifest_is_djangos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = example_site(dir.path());
    let run = storages(dir.path(), &["collectstatic", site.to_str().expect("utf-8"), "--manifest"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "6 static files copied, 0 unmodified, 6 post-processed.");

    let staticfiles = dir.path().join("staticfiles");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(staticfiles.join("staticfiles.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["version"], "1.1");
    assert_eq!(manifest["hash"].as_str().map(str::len), Some(12));
    let paths = manifest["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 6);
    let hashed = |name: &str| paths[name].as_str().expect("a hashed name").to_string();
    let logo = hashed("img/logo.svg");
    assert!(logo.starts_with("img/logo.") && logo.ends_with(".svg") && logo.len() == "img/logo..svg".len() + 12);
    // Both names are stored; the hashed CSS references the hashed image, base CSS and font.
    assert!(staticfiles.join("css/app.css").exists() && staticfiles.join(&logo).exists());
    let css = std::fs::read_to_string(staticfiles.join(hashed("css/app.css"))).expect("hashed css");
    let file = |name: &str| hashed(name).rsplit('/').next().unwrap_or_default().to_string();
    assert!(css.contains(&format!("url(\"../img/{}\")", file("img/logo.svg"))), "{css}");
    assert!(css.contains(&format!("@import \"{}\";", file("css/base.css"))), "{css}");
    assert!(css.contains(&format!("url('../fonts/{}')", file("fonts/example.woff2"))), "{css}");
    assert!(css.contains("url(https://example.com/banner.png)"), "{css}");
    let original = std::fs::read_to_string(staticfiles.join("css/app.css")).expect("original css");
    assert!(original.contains("url(\"../img/logo.svg\")"), "the original keeps its references");

    // Every hashed name exists, and is the MD5 of what is stored under it.
    for (name, hashed) in paths {
        let hashed = hashed.as_str().expect("a string");
        let stored = std::fs::read(staticfiles.join(hashed)).unwrap_or_else(|e| panic!("{hashed} of {name}: {e}"));
        let digest = format!("{:x}", md5_of(&stored));
        assert!(hashed.contains(&digest[..12]), "{hashed} is not the hash of its content ({digest})");
    }

    let again = storages(dir.path(), &["collectstatic", site.to_str().expect("utf-8"), "--manifest", "--stats"], &[]);
    assert!(stdout(&again).starts_with("0 static files copied, 6 unmodified, 6 post-processed."), "{}", stdout(&again));
    assert!(stdout(&again).contains("(0 bytes written,"), "a rerun stores nothing again: {}", stdout(&again));
    assert!(stdout(&again).contains("holds 13"), "6 files, 6 hashed copies, the manifest: {}", stdout(&again));

    // With a failed file, the manifest keeps its old entries and --clear deletes nothing.
    let before = std::fs::read_to_string(staticfiles.join("staticfiles.json")).expect("manifest");
    std::fs::write(site.join("css/base.css"), "p { color: blue }").expect("change");
    std::fs::remove_file(site.join("js/app.js")).expect("remove");
    std::os::unix::fs::symlink("/nonexistent.js", site.join("js/app.js")).expect("dangling");
    let failing = storages(dir.path(), &["collectstatic", site.to_str().expect("utf-8"), "--manifest", "--clear"], &[]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(stderr(&failing).contains("staticfiles.json was not updated"), "{}", stderr(&failing));
    assert!(stderr(&failing).contains("--clear deleted nothing"), "{}", stderr(&failing));
    assert_eq!(std::fs::read_to_string(staticfiles.join("staticfiles.json")).expect("manifest"), before);
    assert!(staticfiles.join(hashed("js/app.js")).exists() && staticfiles.join(hashed("css/base.css")).exists());
}

/// A manifest storage (Django's `ManifestStaticFilesStorage`) gets hashed copies and `staticfiles.json`
/// without `--manifest`, and its `url` answers with the hashed names; a CSS reference to a file that is not
/// collected fails the run in Django's words, unless `--allow-missing-references`.
#[test]
fn a_manifest_storage_serves_hashed_urls_and_refuses_missing_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = example_site(dir.path());
    std::fs::write(
        dir.path().join("storages.toml"),
        "[storages.staticfiles]\nbackend = \"django.contrib.staticfiles.storage.ManifestStaticFilesStorage\"\n\
         location = \"out\"\nbase_url = \"/static/\"\n",
    )
    .expect("settings");
    let site_str = site.to_str().expect("utf-8");
    let early = storages(dir.path(), &["--storage", "staticfiles", "url", "css/app.css"], &[]);
    assert!(stderr(&early).contains("there is no staticfiles.json yet: run collectstatic"), "{}", stderr(&early));
    // A reference under the storage's base URL is resolved from the root, as Django's STATIC_URL.
    std::fs::write(site.join("css/abs.css"), "a { b: url(/static/img/logo.svg) }").expect("write");
    let run = storages(dir.path(), &["collectstatic", site_str], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("7 post-processed"), "{}", stdout(&run));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/staticfiles.json")).expect("manifest"))
            .expect("JSON");
    let hashed = manifest["paths"]["css/app.css"].as_str().expect("an entry").to_string();
    let logo = manifest["paths"]["img/logo.svg"].as_str().expect("an entry");
    let abs = manifest["paths"]["css/abs.css"].as_str().expect("an entry");
    let abs = std::fs::read_to_string(dir.path().join("out").join(abs)).expect("the hashed abs.css");
    assert_eq!(abs, format!("a {{ b: url(/static/{logo}) }}"));
    let url = storages(dir.path(), &["--storage", "staticfiles", "url", "css/app.css"], &[]);
    assert_eq!(stdout(&url).trim(), format!("/static/{hashed}"), "{}", stderr(&url));
    let missing = storages(dir.path(), &["--storage", "staticfiles", "url", "css/none.css"], &[]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("Missing staticfiles manifest entry for 'css/none.css'"), "{}", stderr(&missing));

    std::fs::write(site.join("css/broken.css"), "a { background: url(../img/none.png) }").expect("write");
    let refused = storages(dir.path(), &["collectstatic", site_str], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("1 file failed (see above)"), "{}", stderr(&refused));
    let broken_copies: Vec<_> = std::fs::read_dir(dir.path().join("out/css"))
        .expect("css")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("broken.") && name != "broken.css")
        .collect();
    assert!(broken_copies.is_empty(), "a CSS file that failed has no hashed copy: {broken_copies:?}");
    assert!(
        stderr(&refused).contains("The file 'img/none.png' could not be found (referenced by css/broken.css)"),
        "{}",
        stderr(&refused)
    );
    let kept = storages(dir.path(), &["collectstatic", site_str, "--allow-missing-references"], &[]);
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert!(stderr(&kept).contains("warning: The file 'img/none.png' could not be found"), "{}", stderr(&kept));
}

/// The MD5 of `bytes`, as a number printable in hex.
fn md5_of(bytes: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(bytes).into())
}

#[test]
fn bad_input_is_one_line_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = example_site(dir.path());
    let site_str = site.to_str().expect("utf-8");
    assert!(storages(dir.path(), &["collectstatic", site_str], &[]).status.success());

    let missing = storages(dir.path(), &["collectstatic", "no/such/dir"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing).lines().last(),
        Some("storages: collectstatic: source directory no/such/dir does not exist")
    );

    let unknown = storages(dir.path(), &["--storage", "nope", "ls"], &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(stderr(&unknown).lines().count(), 1, "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("storage 'nope' is not configured"), "{}", stderr(&unknown));

    // An unreadable file: reported with its path and reason, the others done, exit 1, its stored copy kept
    // (even with --clear).
    let app_js = site.join("js/app.js");
    std::fs::remove_file(&app_js).expect("remove");
    std::os::unix::fs::symlink("/nonexistent/target.js", &app_js).expect("dangling symlink");
    std::fs::write(site.join("new.txt"), "new").expect("new file");
    let partial = storages(dir.path(), &["collectstatic", site_str, "--clear"], &[]);
    assert_eq!(partial.status.code(), Some(1), "{}", stderr(&partial));
    assert!(stderr(&partial).contains(&format!("failed: {}:", app_js.display())), "{}", stderr(&partial));
    assert_eq!(stdout(&partial).trim(), "1 static file copied, 5 unmodified, 1 failed.");
    assert!(dir.path().join("staticfiles/js/app.js").exists(), "a file that failed locally was deleted remotely");
    assert!(dir.path().join("staticfiles/new.txt").exists());

    // A rerun once the file is readable finishes the job.
    std::fs::remove_file(&app_js).expect("remove");
    std::fs::write(&app_js, "fixed").expect("fix");
    let rerun = storages(dir.path(), &["collectstatic", site_str], &[]);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(stdout(&rerun).trim(), "1 static file copied, 6 unmodified.");
}

#[test]
fn everyday_commands_on_the_default_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("report.txt"), "numbers").expect("write");
    let put = storages(dir.path(), &["put", "report.txt", "docs/report.txt"], &[]);
    assert_eq!(stdout(&put).trim(), "docs/report.txt");
    let again = storages(dir.path(), &["put", "report.txt", "docs/report.txt"], &[]);
    assert_eq!(stdout(&again).trim(), "docs/report_.txt", "a taken name is never overwritten");
    assert_eq!(stdout(&storages(dir.path(), &["cat", "docs/report.txt"], &[])), "numbers");
    assert_eq!(stdout(&storages(dir.path(), &["ls"], &[])).trim(), "docs/");
    assert_eq!(stdout(&storages(dir.path(), &["ls", "docs"], &[])).trim(), "report.txt\nreport_.txt");
    let long = stdout(&storages(dir.path(), &["ls", "-l", "docs"], &[]));
    assert!(long.lines().all(|l| l.trim_start().starts_with('7')), "{long}");
    let stat = stdout(&storages(dir.path(), &["stat", "docs/report.txt"], &[]));
    assert!(stat.contains("size:          7") && stat.contains("text/plain"), "{stat}");
    assert_eq!(stdout(&storages(dir.path(), &["url", "docs/report.txt"], &[])).trim(), "/media/docs/report.txt");
    let with_params =
        storages(dir.path(), &["url", "docs/report.txt", "--param", "version=10", "--param", "a=b c"], &[]);
    assert_eq!(stdout(&with_params).trim(), "/media/docs/report.txt?version=10&a=b+c");
    let stats = storages(dir.path(), &["--stats", "cat", "docs/report.txt"], &[]);
    assert!(stderr(&stats).contains("operations: open 1 (0 bytes written, 7 read, 0 failed)"), "{}", stderr(&stats));
    let expiring = storages(dir.path(), &["url", "docs/report.txt", "--expires", "60"], &[]);
    assert!(stderr(&expiring).contains("does not sign URLs; its URLs do not expire"), "{}", stderr(&expiring));
    let dir_put = storages(dir.path(), &["put", "downloads-none"], &[]);
    assert!(stderr(&dir_put).contains("downloads-none cannot be read"), "{}", stderr(&dir_put));
    let rm_dir = storages(dir.path(), &["rm", "docs"], &[]);
    assert!(stderr(&rm_dir).contains("a directory with files in it, not a file"), "{}", stderr(&rm_dir));
    let put = storages(dir.path(), &["url", "docs/report.txt", "--method", "PUT"], &[]);
    assert!(!put.status.success() && stderr(&put).contains("no HTTP method but GET"), "{}", stderr(&put));
    std::fs::create_dir(dir.path().join("downloads")).expect("mkdir");
    let into_dir = storages(dir.path(), &["get", "docs/report.txt", "downloads"], &[]);
    assert!(into_dir.status.success(), "{}", stderr(&into_dir));
    assert_eq!(std::fs::read_to_string(dir.path().join("downloads/report.txt")).expect("downloaded"), "numbers");
    let got = storages(dir.path(), &["get", "docs/report_.txt", "copy.txt"], &[]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read_to_string(dir.path().join("copy.txt")).expect("copy"), "numbers");
    let refused = storages(dir.path(), &["get", "docs/report.txt", "copy.txt"], &[]);
    assert_eq!(refused.status.code(), Some(2), "an existing local file is never replaced");
    assert!(stderr(&refused).contains("copy.txt exists"), "{}", stderr(&refused));
    // A download gets the mode any new file gets here (0o666 less the umask), as a plain write does.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.path().join("plain.txt"), "x").expect("write");
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode("copy.txt"), mode("plain.txt"));
    let nodir = storages(dir.path(), &["get", "docs/report.txt", "nodir/out.txt"], &[]);
    assert_eq!(nodir.status.code(), Some(2));
    assert_eq!(stderr(&nodir).trim(), "storages: local directory nodir does not exist");
    let slash = storages(dir.path(), &["get", "docs/report.txt", "nodir/"], &[]);
    assert_eq!(stderr(&slash).trim(), "storages: local directory nodir/ does not exist");
    let under_file = storages(dir.path(), &["get", "docs/report.txt", "copy.txt/x"], &[]);
    assert_eq!(stderr(&under_file).trim(), "storages: local path copy.txt is not a directory");
    assert!(!dir.path().join("nodir").exists());
    assert!(storages(dir.path(), &["rm", "docs/report.txt", "docs/report_.txt", "docs/missing"], &[]).status.success());
    assert_eq!(stdout(&storages(dir.path(), &["ls"], &[])).trim(), "");
    let backends = stdout(&storages(dir.path(), &["backends"], &[]));
    for path in [
        "storages.backends.fs.FileSystemStorage",
        "storages.backends.s3.S3Storage",
        "storages.backends.s3boto3.S3Boto3Storage",
    ] {
        assert!(backends.contains(path), "{backends}");
    }
}

/// `requests: 5 (HEAD 1, LIST 2, PUT 2)` as a map.
fn requests(output: &str) -> std::collections::BTreeMap<String, u64> {
    let line = output.lines().find(|l| l.starts_with("requests: ")).expect("a requests line");
    let inner = line.split_once('(').and_then(|(_, rest)| rest.strip_suffix(')')).unwrap_or_default();
    inner
        .split(", ")
        .filter_map(|kv| kv.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
        .collect()
}

#[test]
fn collectstatic_to_s3_uploads_only_what_changed() {
    let endpoint = var("STORAGES_TEST_MOTO_ENDPOINT");
    collectstatic_skips_unchanged_files("moto", &endpoint, "AKIDMOTO", "moto");
}

/// s3s-fs lists no ETag: the storage's record of MD5s is what lets a rerun skip.
#[test]
fn collectstatic_to_s3_without_listed_etags_uploads_only_what_changed() {
    let (endpoint, key, secret) =
        (var("STORAGES_TEST_S3S_ENDPOINT"), var("STORAGES_TEST_S3S_ACCESS_KEY"), var("STORAGES_TEST_S3S_SECRET_KEY"));
    collectstatic_skips_unchanged_files("s3s-fs", &endpoint, &key, &secret);
}

fn collectstatic_skips_unchanged_files(server: &str, endpoint: &str, access_key: &str, secret_key: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("many");
    for i in 0..2000 {
        let sub = site.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i:04}.txt")), format!("file {i}\n")).expect("write");
    }
    let bucket = format!("cli-{}", std::iter::repeat_with(fastrand::lowercase).take(10).collect::<String>());
    // Pointing collectstatic at S3: two lines of environment (and the test server's endpoint and keys).
    let env = [
        ("STATICFILES_STORAGE", "storages.backends.s3.S3Storage"),
        ("AWS_STORAGE_BUCKET_NAME", bucket.as_str()),
        ("AWS_S3_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
        ("AWS_AUTO_CREATE_BUCKET", "true"),
        // Generous, so that a loaded machine slows the test down without failing it.
        ("STORAGES__STATICFILES__REQUEST_TIMEOUT", "600"),
        ("STORAGES__STATICFILES__RETRY_TIMEOUT", "600"),
    ];
    let site = site.to_str().expect("utf-8");
    let first = storages(dir.path(), &["collectstatic", site, "--stats"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    println!("first run:\n{}", stdout(&first));
    assert!(stdout(&first).starts_with("2000 static files copied, 0 unmodified."), "{}", stdout(&first));

    let second = storages(dir.path(), &["collectstatic", site, "--stats"], &env);
    println!("second run:\n{}", stdout(&second));
    assert!(stdout(&second).starts_with("0 static files copied, 2000 unmodified."), "{}", stdout(&second));
    let counts = requests(&stdout(&second));
    storage_testkit::report(&format!(
        "collectstatic of 2,000 files to S3 ({server}), rerun with nothing changed: {counts:?}"
    ));
    assert_eq!(counts.get("PUT"), None, "{counts:?}");
    let total: u64 = counts.values().sum();
    if server == "moto" {
        assert!(total <= 2, "the listing alone (it shows that the bucket exists): {counts:?}");
    } else {
        // The listing (which starts after the record of MD5s) and one GET of the record.
        assert!(counts.get("LIST").copied().unwrap_or(0) <= 2 && total <= 3, "{counts:?}");
    }

    std::fs::write(Path::new(site).join("d7/f0007.txt"), "changed\n").expect("change");
    let third = storages(dir.path(), &["collectstatic", site, "--stats"], &env);
    println!("third run:\n{}", stdout(&third));
    assert!(stdout(&third).starts_with("1 static file copied, 1999 unmodified."), "{}", stdout(&third));
    // Where the listing shows no MD5, the record is written again too.
    let puts = if server == "moto" { 1 } else { 2 };
    assert_eq!(requests(&stdout(&third)).get("PUT"), Some(&puts));
    storage_testkit::report(&format!("... after changing one file: {:?}", requests(&stdout(&third))));
    let fourth = storages(dir.path(), &["collectstatic", site, "--stats"], &env);
    assert!(stdout(&fourth).starts_with("0 static files copied, 2000 unmodified."), "{}", stdout(&fourth));
    let cat = storages(dir.path(), &["--storage", "staticfiles", "cat", "d7/f0007.txt"], &env);
    assert_eq!(stdout(&cat), "changed\n");
}

#[test]
fn sources_are_walked_like_djangos_finders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for source in [&a, &b] {
        std::fs::create_dir_all(source.join("css")).expect("mkdir");
        std::fs::write(source.join("css/site.css"), source.display().to_string()).expect("write");
    }
    std::fs::write(a.join(".hidden"), "x").expect("write");
    std::fs::write(a.join("notes.txt~"), "x").expect("write");
    std::fs::write(a.join("app.js.map"), "x").expect("write");
    let fifo = Command::new("mkfifo").arg(a.join("pipe")).status().expect("mkfifo");
    assert!(fifo.success());

    let (a_str, b_str) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    let run = storages(dir.path(), &["collectstatic", a_str, b_str, "--ignore", "*.map"], &[]);
    assert_eq!(run.status.code(), Some(1), "the FIFO is reported, not read: {}", stderr(&run));
    assert!(stderr(&run).contains("pipe: not a regular file"), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("warning:") && stderr(&run).contains("has the same name (css/site.css)"),
        "{}",
        stderr(&run)
    );
    assert_eq!(stdout(&run).trim(), "1 static file copied, 0 unmodified, 1 failed.");
    let collected = std::fs::read_to_string(dir.path().join("staticfiles/css/site.css")).expect("collected");
    assert_eq!(collected, a.display().to_string(), "the first source wins");
    for skipped in [".hidden", "notes.txt~", "app.js.map"] {
        assert!(!dir.path().join("staticfiles").join(skipped).exists(), "{skipped} was collected");
    }
}

/// As Django's `get_files`: a pattern is matched against a file's path too, and `*` spans directories.
#[test]
fn ignore_patterns_match_paths_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("static");
    for file in ["admin/css/base.css", "admin/js/app.js", "site/base.css", "vendor1.js", "vendor2.js", "vendor3.js"] {
        let path = source.join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, file).expect("write");
    }
    let source_str = source.to_str().expect("utf-8");
    let args = ["collectstatic", source_str, "--ignore", "admin/*.css", "-i", "vendor[12].js"];
    let run = storages(dir.path(), &args, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let collected = dir.path().join("staticfiles");
    for kept in ["admin/js/app.js", "site/base.css", "vendor3.js"] {
        assert!(collected.join(kept).is_file(), "{kept} was not collected");
    }
    for skipped in ["admin/css/base.css", "vendor1.js", "vendor2.js"] {
        assert!(!collected.join(skipped).exists(), "{skipped} was collected");
    }

    let bad = storages(dir.path(), &["collectstatic", source_str, "--ignore", "[a"], &[]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid ignore pattern \"[a\""), "{}", stderr(&bad));
}

#[test]
fn settings_mistakes_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("storages.toml")).expect("a directory in the way");
    let directory = storages(dir.path(), &["ls"], &[]);
    assert_eq!(directory.status.code(), Some(2));
    assert!(stderr(&directory).contains("settings file storages.toml: it is a directory"), "{}", stderr(&directory));
    std::fs::remove_dir(dir.path().join("storages.toml")).expect("rmdir");
    std::fs::write(dir.path().join("storages.toml"), "[storages.default\n").expect("write");
    let broken = storages(dir.path(), &["ls"], &[]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(stderr(&broken).contains("cannot read the settings"), "{}", stderr(&broken));

    std::fs::write(dir.path().join("storages.toml"), "staticfile_dirs = [\"static\"]\n").expect("write");
    let typo = storages(dir.path(), &["collectstatic"], &[]);
    assert!(
        stderr(&typo).contains("unknown setting `staticfile_dirs`, did you mean `staticfiles_dirs`?"),
        "{}",
        stderr(&typo)
    );

    // Directories in storages.toml are relative to the file, wherever the command runs.
    let site = example_site(dir.path());
    std::fs::write(dir.path().join("storages.toml"), "staticfiles_dirs = \"static\"\n").expect("write");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("storages.toml");
    let run = storages(elsewhere.path(), &["--config", config.to_str().expect("utf-8"), "collectstatic"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "6 static files copied, 0 unmodified.");
    assert!(site.exists());

    let missing = storages(dir.path(), &["ls", "nothing/here"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no file or directory named \"nothing/here\""), "{}", stderr(&missing));
}

#[test]
fn rust_log_shows_every_operation_and_names_only_at_debug() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "hello").expect("write");
    let put = storages(dir.path(), &["put", "a.txt", "docs/a.txt"], &[("RUST_LOG", "storages=debug")]);
    assert!(put.status.success(), "{}", stderr(&put));
    let log = stderr(&put);
    for field in [
        "op=\"save\"",
        "storage=\"default\"",
        "backend=\"storages.backends.fs.FileSystemStorage\"",
        "name=\"docs/a.txt\"",
        "status=\"ok\"",
        "bytes=5",
        "elapsed_ms=",
    ] {
        assert!(log.contains(field), "{field} missing from: {log}");
    }
    let missing = storages(dir.path(), &["cat", "docs/none.txt"], &[("RUST_LOG", "storages=info")]);
    let log = stderr(&missing);
    assert!(log.contains("op=\"open\"") && log.contains("status=\"not_found\""), "{log}");
    assert!(!log.contains("name=\""), "a name at info level: {log}");
    let quiet = storages(dir.path(), &["cat", "docs/a.txt"], &[]);
    assert_eq!(stderr(&quiet), "", "no log lines without RUST_LOG");
}

#[test]
fn concurrent_gets_into_one_directory_never_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let content: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &content).expect("write");
    assert!(storages(dir.path(), &["put", "big.bin"], &[]).status.success());
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let gets: Vec<_> = (0..8)
        .map(|_| {
            let cwd = dir.path().to_path_buf();
            std::thread::spawn(move || storages(&cwd, &["get", "big.bin", "out"], &[]))
        })
        .collect();
    let outcomes: Vec<Output> = gets.into_iter().map(|g| g.join().expect("get")).collect();
    let won = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "exactly one get publishes; the others find the file there");
    for lost in outcomes.iter().filter(|o| !o.status.success()) {
        assert!(stderr(lost).contains("exists"), "{}", stderr(lost));
    }
    assert!(std::fs::read(dir.path().join("out/big.bin")).expect("got") == content, "the content is whole");
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("out")).expect("out").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["big.bin"], "temporary files left");
}

#[test]
fn settings_come_from_the_working_directory_and_paths_from_the_file() {
    // A parent directory's storages.toml (another project's, say a production storage) is never picked up.
    let parent = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        parent.path().join("storages.toml"),
        "[storages.staticfiles]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocation = \"production\"\n",
    )
    .expect("write");
    let project = parent.path().join("project");
    let site = example_site(&project);
    let run = storages(&project, &["collectstatic", site.to_str().expect("utf-8")], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(project.join("staticfiles/css/app.css").is_file(), "the embedded default is used");
    assert!(!parent.path().join("production").exists(), "the parent's storage was touched");
    assert!(stderr(&run).contains("no settings file (no storages.toml in"), "{}", stderr(&run));

    // A relative location in a settings file is beside the file, wherever the command runs; the command
    // names the file before it changes anything.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = parent.path().join("storages.toml");
    let run = storages(
        elsewhere.path(),
        &["--config", config.to_str().expect("utf-8"), "collectstatic", site.to_str().expect("utf-8")],
        &[],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(parent.path().join("production/css/app.css").is_file(), "location resolved against the file");
    assert_eq!(std::fs::read_dir(elsewhere.path()).expect("read_dir").count(), 0, "nothing in the working dir");
    assert!(stderr(&run).contains(&format!("settings from {}", config.display())), "{}", stderr(&run));
    // Reading commands stay quiet about it.
    let ls = storages(
        elsewhere.path(),
        &["--config", config.to_str().expect("utf-8"), "--storage", "staticfiles", "ls"],
        &[],
    );
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert_eq!(stderr(&ls), "");
    assert!(stdout(&ls).contains("css/"), "{}", stdout(&ls));
}

#[test]
fn a_symlink_cycle_in_the_sources_is_collected_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = example_site(dir.path());
    std::os::unix::fs::symlink("..", site.join("css/up")).expect("symlink");
    let run = storages(dir.path(), &["collectstatic", site.to_str().expect("utf-8")], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "6 static files copied, 0 unmodified.");
    assert!(stderr(&run).contains("a symlink cycle?"), "{}", stderr(&run));
    assert!(!dir.path().join("staticfiles/css/up").exists(), "the cycle was walked");
}

#[test]
fn a_cache_layer_is_shown_and_emptied_from_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("storages.toml"),
        "[storages.files]\nbackend = \"storages.backends.fs.FileSystemStorage\"\nlocation = \"files\"\n\
         [storages.cached]\nbackend = \"storages.backends.cache.CachedStorage\"\ninner = \"files\"\n\
         disk_path = \"cache\"\nblock_size = \"4 KiB\"\n",
    )
    .expect("settings");
    std::fs::write(dir.path().join("a.bin"), vec![7u8; 20_000]).expect("write");
    let put = storages(dir.path(), &["--storage", "cached", "put", "a.bin"], &[]);
    assert!(put.status.success(), "{}", stderr(&put));
    let cat = storages(dir.path(), &["--storage", "cached", "cat", "a.bin"], &[]);
    assert_eq!(cat.stdout.len(), 20_000);
    let blocks = std::fs::read_dir(dir.path().join("cache")).expect("the disk tier, beside the settings").count();
    assert_eq!(blocks, 5, "one file per 4 KiB block");
    let counted = storages(dir.path(), &["--storage", "cached", "--stats", "cat", "a.bin"], &[]);
    assert!(stderr(&counted).contains("cache: metadata hits"), "{}", stderr(&counted));
    assert!(stderr(&counted).contains("block hits 5"), "warm from memory? {}", stderr(&counted));
    let stats = storages(dir.path(), &["--storage", "cached", "cache", "stats"], &[]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    assert!(stdout(&stats).lines().any(|l| l.starts_with("bytes on disk") && !l.ends_with(" 0")), "{}", stdout(&stats));
    let clear = storages(dir.path(), &["--storage", "cached", "cache", "clear"], &[]);
    assert!(clear.status.success(), "{}", stderr(&clear));
    assert_eq!(std::fs::read_dir(dir.path().join("cache")).expect("cache dir").count(), 0);
    let not_a_cache = storages(dir.path(), &["--storage", "files", "cache", "clear"], &[]);
    assert_eq!(not_a_cache.status.code(), Some(2));
    assert!(stderr(&not_a_cache).contains("is not a cache layer"), "{}", stderr(&not_a_cache));
}

/// A laptop configured with `aws configure`: the profile named by `session_profile`, `$AWS_PROFILE` or
/// `default` gives the keys, region and endpoint, checked by s3s-fs, which refuses a wrong signature; a profile
/// with keys, or one that is not there, is a settings error saying so.
#[test]
fn aws_profiles_configure_the_s3_storage() {
    let (endpoint, key, secret) =
        (var("STORAGES_TEST_S3S_ENDPOINT"), var("STORAGES_TEST_S3S_ACCESS_KEY"), var("STORAGES_TEST_S3S_SECRET_KEY"));
    let dir = tempfile::tempdir().expect("tempdir");
    let aws = dir.path().join("home/.aws");
    std::fs::create_dir_all(&aws).expect("mkdir");
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n\n\
             [dev]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n\n\
             [wrong]\naws_access_key_id = {key}\naws_secret_access_key = not-the-secret\n"
        ),
    )
    .expect("credentials");
    std::fs::write(
        aws.join("config"),
        format!(
            "[default]\nendpoint_url = {endpoint}\n\n[profile dev]\nregion = us-east-1\nendpoint_url = {endpoint}\n\n\
             [profile wrong]\nendpoint_url = {endpoint}\n\n\
             [profile assumed]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = dev\n"
        ),
    )
    .expect("config");
    let home = dir.path().join("home");
    let home = home.to_str().expect("utf-8");
    let bucket = format!("cli-{}", std::iter::repeat_with(fastrand::lowercase).take(10).collect::<String>());
    let settings = |extra: &str| {
        std::fs::write(
            dir.path().join("storages.toml"),
            format!(
                "[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nbucket_name = {bucket:?}\n\
                 auto_create_bucket = true\n{extra}"
            ),
        )
        .expect("settings")
    };
    std::fs::write(dir.path().join("a.txt"), "from a profile").expect("write");

    settings("session_profile = \"dev\"\n");
    let put = storages(dir.path(), &["put", "a.txt"], &[("HOME", home)]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(stdout(&storages(dir.path(), &["cat", "a.txt"], &[("HOME", home)])), "from a profile");

    // No profile named: $AWS_PROFILE, else `default`.
    settings("");
    let wrong = storages(dir.path(), &["cat", "a.txt"], &[("HOME", home), ("AWS_PROFILE", "wrong")]);
    assert!(!wrong.status.success(), "the wrong profile's secret was not used: {}", stdout(&wrong));
    assert!(!stderr(&wrong).contains("not-the-secret"), "{}", stderr(&wrong));
    let default = storages(dir.path(), &["cat", "a.txt"], &[("HOME", home)]);
    assert_eq!(stdout(&default), "from a profile", "{}", stderr(&default));

    settings("session_profile = \"dev\"\naccess_key = \"AKID\"\nsecret_key = \"s\"\n");
    let both = storages(dir.path(), &["cat", "a.txt"], &[("HOME", home)]);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains(
            "AWS_S3_SESSION_PROFILE/session_profile should not be provided with AWS_S3_ACCESS_KEY_ID/access_key and \
             AWS_S3_SECRET_ACCESS_KEY/secret_key"
        ),
        "{}",
        stderr(&both)
    );
    settings("session_profile = \"assumed\"\n");
    let assumed = storages(dir.path(), &["cat", "a.txt"], &[("HOME", home)]);
    assert!(
        stderr(&assumed).contains("gets its credentials by `role_arn`, which this storage does not support"),
        "{}",
        stderr(&assumed)
    );
    settings("session_profile = \"nope\"\n");
    let missing = storages(dir.path(), &["cat", "a.txt"], &[("HOME", home)]);
    assert!(stderr(&missing).contains("the AWS profile 'nope' is in neither"), "{}", stderr(&missing));
}
