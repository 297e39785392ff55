//! S3Storage against moto_server: the conformance scenarios and S3's own behaviours.

mod support;

use std::sync::Arc;
use storage_core::{AlternativeNames, Content, Error, Storage};
use storage_s3::S3Options;
use storage_testkit::{Fixture, Outcome};
use support::moto;
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;

/// Options that make anything over 5 MiB go multipart, in 5 MiB parts.
fn multipart_options() -> S3Options {
    S3Options { multipart_threshold: 5 * MIB as u64, multipart_chunksize: 5 * MIB as u64, ..moto().options() }
}

/// With Django's random suffixes, the scenarios about taken names hold too. (The whole suite runs on moto from
/// the `conformance` crate.)
#[test]
fn random_alternative_names() {
    let server = moto();
    let options = S3Options { alternative_names: AlternativeNames::Random, ..server.options() };
    let fixture = Fixture::new(Arc::new(server.storage(options))).cases(4);
    for name in ["same_name_alternative", "concurrent_saves", "max_length"] {
        assert_eq!(storage_testkit::scenario(name).expect("scenario").run(&fixture), Outcome::Passed, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_reach_the_object_as_another_client_sees_it() {
    let server = moto();
    let options = S3Options {
        headers: [
            ("Cache-Control", "max-age=86400"),
            ("Expires", "Thu, 15 Apr 2010 20:00:00 GMT"),
            ("x-amz-meta-owner", "storages"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into(),
        object_parameters: [("Content-Disposition".to_string(), "inline".to_string())].into(),
        default_acl: Some("public-read".into()),
        ..server.options()
    };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("css/style.css", "body { color: red }".into()).await.expect("save");
    // Multipart uploads carry the same headers: they are published by a copy whose target is created with them.
    let big = S3Options {
        multipart_threshold: 5 * MIB as u64,
        multipart_chunksize: 5 * MIB as u64,
        ..storage.options().clone()
    };
    let big_storage = server.storage(big);
    big_storage.save("big/app.js", vec![b'x'; 6 * MIB].into()).await.expect("save multipart");

    for key in ["css/style.css", "big/app.js"] {
        let head = server.boto3(
            &bucket,
            &format!(
                "h = s3.head_object(Bucket=bucket, Key={key:?})\n\
                 print(json.dumps({{k: str(h.get(k)) for k in ['CacheControl', 'ContentType', 'ContentDisposition', 'Metadata']}} | \
                 {{'Expires': h['ResponseMetadata']['HTTPHeaders'].get('expires')}}))"
            ),
        );
        println!("HeadObject {key}: {head}");
        assert!(head.contains(r#""CacheControl": "max-age=86400""#), "{head}");
        assert!(head.contains(r#""Expires": "Thu, 15 Apr 2010 20:00:00 GMT""#), "{head}");
        assert!(head.contains(r#""ContentDisposition": "inline""#), "{head}");
        assert!(head.contains("'owner': 'storages'"), "{head}");
        let content_type = if key.ends_with(".css") { "text/css" } else { "text/javascript" };
        assert!(head.contains(&format!(r#""ContentType": "{content_type}""#)), "{head}");
    }
    let grants = server.boto3(
        &bucket,
        "print(json.dumps([g['Grantee'].get('URI', '') + ':' + g['Permission'] \
         for g in s3.get_object_acl(Bucket=bucket, Key='css/style.css')['Grants']]))",
    );
    assert!(grants.contains("AllUsers:READ"), "{grants}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_create_bucket_creates_and_its_absence_is_a_clear_error() {
    let server = moto();
    let options = server.options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options.clone());
    storage.save("a.txt", "x".into()).await.expect("save into a created bucket");
    let listed = server.boto3(&bucket, "print(json.dumps([b['Name'] for b in s3.list_buckets()['Buckets']]))");
    assert!(listed.contains(&bucket), "{listed}");

    let missing = storage_support_missing_bucket(&server);
    let error = missing.save("a.txt", "x".into()).await.expect_err("missing bucket");
    let message = error.to_string();
    assert!(message.contains("does not exist") && message.contains(&server.endpoint), "{message}");
    assert!(message.contains("auto_create_bucket"), "{message}");
    assert!(missing.exists("a.txt").await.is_err());
}

/// A listing goes first, without the bucket check; when it fails because the bucket is missing, the check runs
/// then: it creates the bucket with `auto_create_bucket` (the listing is empty), else says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_listing_needs_no_bucket_check_and_finds_a_missing_bucket() {
    let server = moto();
    let count = |storage: &storage_s3::S3Storage| storage.request_counts().into_iter().collect::<Vec<_>>();

    let created = server.storage(server.options());
    assert!(created.list_files("").await.expect("a listing creates the bucket").is_empty());
    created.save("css/a.css", "a{}".into()).await.expect("save");
    let existing = server.storage(S3Options { bucket_name: created.options().bucket_name.clone(), ..server.options() });
    let names: Vec<String> = existing.list_files("").await.expect("list").into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["css/a.css"]);
    assert_eq!(count(&existing), [("LIST".to_string(), 1)], "a listing of an existing bucket is one request");
    existing.exists("css/a.css").await.expect("exists");
    assert!(!count(&existing).iter().any(|(kind, _)| kind == "HEAD_BUCKET"), "{:?}", count(&existing));

    let missing = storage_support_missing_bucket(&server);
    let message = missing.list_files("").await.expect_err("missing bucket").to_string();
    assert!(message.contains("does not exist") && message.contains("auto_create_bucket"), "{message}");
}

fn storage_support_missing_bucket(server: &support::Server) -> storage_s3::S3Storage {
    server.storage(S3Options { auto_create_bucket: false, ..server.options() })
}

/// Saves of one name in turn: each large save is published under a free name by a conditional copy. (Concurrent
/// large saves rely on the server checking `If-None-Match` on CompleteMultipartUpload atomically, as AWS does;
/// moto checks it without a lock, so the concurrent case is not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_saves_round_trip_and_never_overwrite() {
    let server = moto();
    let options = multipart_options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    let mut saved = Vec::new();
    for i in 0..3u8 {
        let content = vec![b'a' + i; 11 * MIB + i as usize];
        saved.push((storage.save("videos/clip.mp4", content.clone().into()).await.expect("save"), content));
    }
    let names: Vec<&str> = saved.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["videos/clip.mp4", "videos/clip_.mp4", "videos/clip__.mp4"]);
    for (name, content) in &saved {
        let file = storage.open(name).await.expect("open");
        assert_eq!(file.size(), content.len() as u64);
        assert!(file.read_all().await.expect("read") == content[..], "{name} holds other content");
    }
    assert_eq!(server.pending_uploads(&bucket), "[]");
    let keys = server.all_keys(&bucket);
    assert!(!keys.contains(".storages-staging"), "staging objects left: {keys}");
    assert_eq!(storage.listdir("").await.expect("listdir"), (vec!["videos".to_string()], vec![]));

    // With file_overwrite, parts go straight to the name, replacing it.
    let overwriting = server.storage(S3Options { file_overwrite: true, ..storage.options().clone() });
    let name = overwriting.save("videos/clip.mp4", vec![b'z'; 6 * MIB].into()).await.expect("overwrite");
    assert_eq!(name, "videos/clip.mp4");
    assert_eq!(overwriting.size("videos/clip.mp4").await.expect("size"), 6 * MIB as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_multipart_upload_leaves_no_object_and_no_pending_upload() {
    let server = moto();
    let options = multipart_options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    let failing = storage_testkit::FailingReader::after(vec![7u8; 12 * MIB]);
    let error = storage.save("broken.bin", Content::from_reader(failing)).await.expect_err("must fail");
    assert!(matches!(error, Error::Content { .. }), "{error:?}");
    // The abort runs in the upload's task.
    assert_eq!(server.settled_uploads(&bucket).await, "[]");
    assert_eq!(server.all_keys(&bucket), "[]");

    // The same for a writer dropped after its first parts were sent.
    let mut writer = storage.open_write("dropped.bin").await.expect("open_write");
    writer.write_all(&vec![1u8; 12 * MIB]).await.expect("write");
    drop(writer);
    assert_eq!(server.settled_uploads(&bucket).await, "[]");
    assert_eq!(server.all_keys(&bucket), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listdir_follows_pagination_and_skips_folder_markers() {
    let server = moto();
    let options = S3Options { location: "site/media".into(), ..server.options() };
    let bucket = options.bucket_name.clone();
    let storage = Arc::new(server.storage(options));
    let saves = futures::stream::iter(0..1100).map(|i| {
        let storage = storage.clone();
        async move { storage.save(&format!("many/f{i:04}.txt"), "x".into()).await.expect("save") }
    });
    use futures::StreamExt;
    let saved: Vec<String> = saves.buffer_unordered(16).collect().await;
    assert_eq!(saved.len(), 1100);
    storage.save("many/sub/inner.txt", "x".into()).await.expect("save");
    server.boto3(&bucket, "s3.put_object(Bucket=bucket, Key='site/media/many/', Body=b'')");
    let (dirs, files) = storage.listdir("many").await.expect("listdir");
    assert_eq!(dirs, ["sub"]);
    assert_eq!(files.len(), 1100);
    assert_eq!(files[0], "f0000.txt");
    assert_eq!(files[1099], "f1099.txt");
    // Names live under the location, and cannot leave it.
    let keys = server.all_keys(&bucket);
    assert!(keys.contains("site/media/many/f0000.txt"), "{}", &keys[..200.min(keys.len())]);
    assert!(storage.open("../escape").await.is_err());
}

#[tokio::test]
async fn urls_are_custom_domain_public_or_presigned_without_a_request() {
    // An endpoint nothing listens on: URLs must not need the network.
    let options = S3Options {
        bucket_name: "media".into(),
        endpoint_url: Some("http://127.0.0.1:9".into()),
        access_key: Some("AKIDEXAMPLE".into()),
        secret_key: Some("url-s3cr3t".into()),
        location: "static".into(),
        ..S3Options::default()
    };
    let storage = storage_s3::S3Storage::new("s3", options.clone()).expect("storage");
    let url = storage.url("dir/whacky & filename.mp4").await.expect("presigned");
    assert!(url.starts_with("http://127.0.0.1:9/media/static/dir/whacky%20%26%20filename.mp4?"), "{url}");
    assert!(url.contains("X-Amz-Expires=3600") && url.contains("X-Amz-Signature="), "{url}");
    assert!(!url.contains("url-s3cr3t"));
    let url = storage.url_expiring("a.txt", std::time::Duration::from_secs(60)).await.expect("presigned");
    assert!(url.contains("X-Amz-Expires=60"), "{url}");

    let public = storage_s3::S3Storage::new(
        "s3",
        S3Options { custom_domain: Some("cdn.example.com".into()), location: String::new(), ..options.clone() },
    )
    .expect("storage");
    assert_eq!(
        public.url("whacky & filename.mp4").await.expect("url"),
        "https://cdn.example.com/whacky%20%26%20filename.mp4"
    );
    assert_eq!(
        public.url("dir/übung ñ.txt").await.expect("url"),
        "https://cdn.example.com/dir/%C3%BCbung%20%C3%B1.txt"
    );

    let unsigned = storage_s3::S3Storage::new("s3", S3Options { querystring_auth: false, ..options }).expect("storage");
    assert_eq!(unsigned.url("a b.txt").await.expect("url"), "http://127.0.0.1:9/media/static/a%20b.txt");
    // An expiry asked for is honoured even so: the URL is presigned.
    assert!(unsigned.capabilities().expiring_urls && !unsigned.capabilities().presigned_urls);
    let url = unsigned.url_expiring("a.txt", std::time::Duration::from_secs(60)).await.expect("url");
    assert!(url.contains("X-Amz-Expires=60"), "{url}");
    assert!(!public.capabilities().expiring_urls, "a custom domain's URL does not expire");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named_after_bounded_retries() {
    let options = S3Options {
        bucket_name: "media".into(),
        endpoint_url: Some("http://127.0.0.1:9".into()),
        access_key: Some("AKIDEXAMPLE".into()),
        secret_key: Some("unreachable-s3cr3t".into()),
        max_retries: 1,
        ..S3Options::default()
    };
    let storage = storage_s3::S3Storage::new("s3", options).expect("storage");
    let error = storage.save("a.txt", "x".into()).await.expect_err("unreachable");
    assert_eq!(error.kind(), storage_core::ErrorKind::Unreachable, "{error}");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("cannot reach http://127.0.0.1:9") && message.contains("'media'"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
    let debug = format!("{storage:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_stores_compressed_content_with_its_encoding() {
    let server = moto();
    let options = S3Options { gzip: true, ..server.options() };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    let css = "body { color: red }\n".repeat(1000);
    storage.save("app.css", css.clone().into()).await.expect("save");
    storage.save("photo.jpg", "not compressed".into()).await.expect("save");
    let out = server.boto3(
        &bucket,
        "import gzip\no = s3.get_object(Bucket=bucket, Key='app.css')\n\
         print(o.get('ContentEncoding'), len(gzip.decompress(o['Body'].read())), \
         s3.head_object(Bucket=bucket, Key='photo.jpg').get('ContentEncoding'))",
    );
    assert_eq!(out, format!("gzip {} None", css.len()));
    assert!(storage.size("app.css").await.expect("size") < css.len() as u64 / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_from_settings_and_django_environment_variables() {
    let server = moto();
    let bucket = support::fresh_bucket();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("storages.toml");
    std::fs::write(
        &config,
        format!(
            "[storages.default]\nbackend = \"storages.backends.s3boto3.S3Boto3Storage\"\nendpoint_url = {:?}\n\
             [storages.default.headers]\nCache-Control = \"max-age=60\"\n",
            server.endpoint
        ),
    )
    .expect("config");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-s3cr3t"),
        ("AWS_STORAGE_BUCKET_NAME", bucket.as_str()),
        ("AWS_AUTO_CREATE_BUCKET", "true"),
        ("AWS_QUERYSTRING_AUTH", "false"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = storage_core::Settings::from_file_and_env(&config, env).expect("settings");
    assert!(!format!("{settings:?}").contains("s3cr3t"));
    let storages = storage_core::Storages::new(settings);
    let storage = storages.get("default").expect("default");
    let name = storage.save("hello.txt", "hello".into()).await.expect("save");
    assert_eq!(storage.url(&name).await.expect("url"), format!("{}/{bucket}/hello.txt", server.endpoint));
    assert!(!format!("{storage:?}").contains("s3cr3t"));

    // A misspelt key is named with its origin, like every backend's.
    std::fs::write(&config, "[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nbucket = \"x\"\n")
        .expect("config");
    let settings = storage_core::Settings::from_file_and_env(&config, Vec::new()).expect("settings");
    let message = storage_core::Storages::new(settings).get("default").expect_err("typo").to_string();
    assert!(message.contains("`bucket`") && message.contains("did you mean `bucket_name`?"), "{message}");
}

/// Many small saves at once all commit: the upload task must see the writer's commit even when the data
/// channel's close reaches it first (a race that once failed about one save in a thousand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_saves_all_commit() {
    use futures::StreamExt;
    let server = moto();
    let storage = Arc::new(server.storage(server.options()));
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..1500 {
        std::fs::write(dir.path().join(format!("{i}.txt")), format!("file {i}")).expect("write");
    }
    let results: Vec<_> = futures::stream::iter(0..1500)
        .map(|i| {
            let storage = storage.clone();
            let local = dir.path().join(format!("{i}.txt"));
            async move { storage.save(&format!("many/{i}.txt"), Content::from_path(local)).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    assert!(failures.is_empty(), "{} saves failed, the first: {:?}", failures.len(), failures.first());
    let names: Vec<String> = storage.list_files("many").await.expect("list").into_iter().map(|f| f.name).collect();
    assert_eq!(names.len(), 1500);

    // Deleting them all takes one bulk request per 1,000 names.
    let count = |kind: &str| storage.request_counts().into_iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| n);
    let before = count("DELETE_OBJECTS");
    assert!(storage.delete_many(&names).await.is_empty());
    assert_eq!(count("DELETE_OBJECTS") - before, 2);
    assert!(storage.list_files("many").await.expect("list").is_empty());
}

/// A listing is enough to tell whether an object holds some content, also for multipart and gzipped objects,
/// so that collectstatic neither re-uploads nor downloads what is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_tell_whether_objects_hold_local_content() {
    use storage_core::Local;
    let server = moto();
    let options = S3Options { gzip: true, ..multipart_options() };
    let storage = server.storage(options);
    let big = storage_testkit::Blob { len: 11 * MIB + 5, seed: 9 }.bytes();
    let other = storage_testkit::Blob { len: 11 * MIB + 5, seed: 10 }.bytes();
    let css = "body { color: red }\n".repeat(5000);
    storage.save("staged.bin", big.clone().into()).await.expect("save (staged, then copied)");
    storage.replace("direct.bin", big.clone().into()).await.expect("replace (parts straight to the key)");
    storage.save("site.css", css.clone().into()).await.expect("save (gzipped)");

    let held: std::collections::BTreeMap<String, storage_core::FileMeta> =
        storage.list_files("").await.expect("list").into_iter().map(|f| (f.name.clone(), f)).collect();
    // (The listing read the storage's record of MD5s, since multipart ETags are none: one GET.)
    let gets = || storage.request_counts().into_iter().find(|(kind, _)| kind == "GET").map_or(0, |(_, n)| n);
    let listed_gets = gets();
    assert!(held["staged.bin"].etag.as_deref().unwrap_or_default().contains('-'), "{:?}", held["staged.bin"]);
    let md5 = |bytes: &[u8]| format!("{:x}", u128::from_be_bytes(md5_digest(bytes)));
    for name in ["staged.bin", "direct.bin"] {
        let meta = &held[name];
        assert!(storage.holds(meta, Local::Bytes(&big), &md5(&big), big.len() as u64).await.expect("holds"), "{name}");
        assert!(!storage.holds(meta, Local::Bytes(&other), &md5(&other), other.len() as u64).await.expect("holds"));
    }
    let css_meta = &held["site.css"];
    assert!(
        storage
            .holds(css_meta, Local::Bytes(css.as_bytes()), &md5(css.as_bytes()), css.len() as u64)
            .await
            .expect("holds")
    );
    let changed = css.replace("red", "blue");
    assert!(
        !storage
            .holds(css_meta, Local::Bytes(changed.as_bytes()), &md5(changed.as_bytes()), changed.len() as u64)
            .await
            .expect("holds")
    );
    assert_eq!(gets(), listed_gets, "holds must not download: {:?}", storage.request_counts());
}

fn md5_digest(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

/// 32 concurrent large saves of one name keep 32 objects, even when their Completes reach moto at once (see
/// [`support::Server::race_large_saves`]); moto checks `If-None-Match` on CompleteMultipartUpload without a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_large_saves_of_one_name_lose_nothing() {
    moto().race_large_saves(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_read_in_concurrent_ranges() {
    moto().read_large_objects_in_ranges().await;
}

/// Ranged GETs are pinned to the version `open` saw: an object replaced meanwhile fails the read, never mixes.
/// (s3s-fs ignores `If-Match` on GET, so this runs on moto.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_ranges_never_mixes_two_versions() {
    let server = moto();
    let options = S3Options { max_concurrency: 2, ..multipart_options() };
    let storage = server.storage(options.clone());
    let first = storage_testkit::Blob { len: 16 * MIB, seed: 1 }.bytes();
    let second = storage_testkit::Blob { len: 16 * MIB, seed: 2 }.bytes();
    storage.save("v.bin", first.clone().into()).await.expect("save");
    let file = storage.open("v.bin").await.expect("open");
    server.storage(options).replace("v.bin", second.into()).await.expect("replace");
    let error = file.read_all().await.expect_err("the object changed while it was read");
    assert!(error.to_string().contains("changed since it was opened"), "{error}");
}

/// Multipart objects' ETags are no MD5: the record holds theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_md5s_hold_until_the_object_changes() {
    moto().recorded_md5s_hold_until_the_object_changes(true).await;
}

/// Attributes one save declares reach the object as another client sees it, over the storage's own headers, on
/// every path a save takes: one PutObject, parts straight to the name (a file), parts staged then copied (a
/// stream). A content encoding declared by the save turns gzip off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saves_attributes_reach_the_object_over_the_storages_headers() {
    use storage_core::SaveOptions;
    let server = moto();
    let options = S3Options {
        headers: [("Cache-Control", "max-age=1"), ("Content-Disposition", "inline"), ("x-amz-meta-owner", "storages")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        gzip: true,
        ..multipart_options()
    };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    let declared = SaveOptions::new()
        .content_type("test/foo")
        .content_disposition("attachment; filename=\"report.css\"")
        .cache_control("no-store")
        .content_encoding("identity")
        .metadata("Reviewed-By", "ada");
    let local = tempfile::NamedTempFile::new().expect("local file");
    std::fs::write(local.path(), vec![b'f'; 6 * MIB]).expect("write");
    let saves = [
        ("small.css", Content::from("body {}")),
        ("file.css", Content::from_path(local.path())),
        ("stream.css", Content::from_reader(std::io::Cursor::new(vec![b's'; 6 * MIB]))),
    ];
    for (name, content) in saves {
        assert_eq!(storage.save_with(name, content, &declared).await.expect("save"), name);
        let head = server.boto3(
            &bucket,
            &format!(
                "h = s3.head_object(Bucket=bucket, Key={name:?})\n\
                 print(json.dumps({{k: str(h.get(k)) for k in ['CacheControl', 'ContentType', 'ContentDisposition', \
                 'ContentEncoding', 'Metadata']}}))"
            ),
        );
        println!("HeadObject {name}: {head}");
        assert!(head.contains(r#""ContentType": "test/foo""#), "{head}");
        assert!(head.contains(r#""CacheControl": "no-store""#), "{head}");
        assert!(head.contains(r#""ContentDisposition": "attachment; filename=\"report.css\"""#), "{head}");
        assert!(head.contains(r#""ContentEncoding": "identity""#), "{head}");
        assert!(head.contains("'reviewed-by': 'ada'") && head.contains("'owner': 'storages'"), "{head}");
        let stat = storage.stat(name).await.expect("stat");
        assert_eq!(stat.content_type.as_deref(), Some("test/foo"));
    }
    // Without attributes, the storage's headers and gzip apply as before.
    storage.save("plain.css", "body {}".into()).await.expect("save");
    let head = server.boto3(
        &bucket,
        "h = s3.head_object(Bucket=bucket, Key='plain.css')\n\
         print(json.dumps({k: str(h.get(k)) for k in ['CacheControl', 'ContentType', 'ContentEncoding']}))",
    );
    assert!(head.contains(r#""CacheControl": "max-age=1""#) && head.contains(r#""ContentEncoding": "gzip""#), "{head}");
    // An attribute that cannot be a header is refused before anything is sent.
    let bad = SaveOptions::new().content_type("text/plain\nX-Evil: 1");
    let error = storage.save_with("bad.txt", "x".into(), &bad).await.expect_err("a bad header value");
    assert!(error.to_string().contains("content type"), "{error}");
    assert!(!storage.exists("bad.txt").await.expect("exists"));
}

/// With `file_overwrite`, a name longer than `max_length` is truncated in its stem (django-storages'
/// `get_available_overwrite_name`), and refused when the stem cannot give enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overwriting_storage_truncates_names_to_max_length() {
    use storage_core::SaveOptions;
    let server = moto();
    let storage = server.storage(S3Options { file_overwrite: true, ..server.options() });
    let name = "parent/child.txt";
    let options = SaveOptions::new().max_length(name.len() - 1);
    assert_eq!(storage.save_with(name, "one".into(), &options).await.expect("save"), "parent/chil.txt");
    assert_eq!(storage.save_with(name, "two".into(), &options).await.expect("save"), "parent/chil.txt");
    assert_eq!(storage.open("parent/chil.txt").await.expect("open").read_all().await.expect("read"), "two");
    let error = storage
        .save_with(name, "x".into(), &SaveOptions::new().max_length(name.len() - 5))
        .await
        .expect_err("the stem cannot give 5 characters");
    assert!(error.to_string().contains("Storage tried to truncate away entire filename"), "{error}");
    assert!(!storage.exists(name).await.expect("exists"));
}

/// django-storages' `AWS_S3_OBJECT_PARAMETERS` by boto3's names, and the encryption settings, reach the object
/// as boto3 sees it: an `ACL` parameter wins over `default_acl`, `Metadata` is a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_object_parameters_and_encryption_reach_the_object() {
    let server = moto();
    // As the environment's AWS_S3_OBJECT_PARAMETERS arrives, through the settings' own parser.
    let json = r#"{"CacheControl": "max-age=60", "ACL": "private", "StorageClass": "STANDARD_IA",
        "ContentDisposition": "attachment", "Metadata": {"reviewed-by": "ada"}}"#;
    let parsed: S3Options = figment::Figment::new()
        .merge(figment::providers::Serialized::default("object_parameters", json))
        .extract()
        .expect("object parameters");
    let object_parameters = parsed.object_parameters;
    let options = S3Options {
        object_parameters,
        default_acl: Some("public-read".into()),
        server_side_encryption: Some("AES256".into()),
        ..multipart_options()
    };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("small.txt", "x".into()).await.expect("save");
    storage.save("large.bin", vec![b'l'; 6 * MIB].into()).await.expect("save in parts");
    for key in ["small.txt", "large.bin"] {
        let head = server.boto3(
            &bucket,
            &format!(
                "h = s3.head_object(Bucket=bucket, Key={key:?})\n\
                 print(json.dumps({{k: str(h.get(k)) for k in ['CacheControl', 'StorageClass', 'ContentDisposition', \
                 'ServerSideEncryption', 'Metadata']}}))\n\
                 print(json.dumps([g['Grantee'].get('URI', '') + ':' + g['Permission'] \
                 for g in s3.get_object_acl(Bucket=bucket, Key={key:?})['Grants']]))"
            ),
        );
        println!("{key}: {head}");
        assert!(head.contains(r#""CacheControl": "max-age=60""#), "{head}");
        assert!(head.contains(r#""StorageClass": "STANDARD_IA""#), "{head}");
        assert!(head.contains(r#""ContentDisposition": "attachment""#), "{head}");
        assert!(head.contains(r#""ServerSideEncryption": "AES256""#), "{head}");
        assert!(head.contains("'reviewed-by': 'ada'"), "{head}");
        assert!(!head.contains("AllUsers:READ"), "ACL private must win over default_acl public-read: {head}");
        assert_eq!(storage.open(key).await.expect("open").size(), if key == "small.txt" { 1 } else { 6 * MIB as u64 });
    }

    // aws:kms with a key id, from the settings.
    let options = S3Options {
        server_side_encryption: Some("aws:kms".into()),
        sse_kms_key_id: Some("alias/storages-test".into()),
        ..server.options()
    };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("kms.txt", "secret".into()).await.expect("save");
    let head = server.boto3(
        &bucket,
        "h = s3.head_object(Bucket=bucket, Key='kms.txt')\n\
         print(json.dumps({k: str(h.get(k)) for k in ['ServerSideEncryption', 'SSEKMSKeyId']}))",
    );
    println!("kms.txt: {head}");
    assert!(head.contains(r#""ServerSideEncryption": "aws:kms""#), "{head}");
    assert!(head.contains("alias/storages-test"), "{head}");
    assert_eq!(storage.open("kms.txt").await.expect("open").read_all().await.expect("read"), "secret");
}

/// SSE-C: objects saved with a customer key (in one request, in parts, staged and copied) read back whole with
/// it, and every request that writes, reads or copies an object carries the key and its MD5, as S3 requires
/// (copies the source's too); deletes and listings do not. moto stores SSE-C objects without checking the key
/// (5.2: a read without it succeeds), so the requests are checked as the proxy between the two saw them. No
/// error repeats the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_key_goes_with_every_request_on_an_object() {
    use base64::Engine;
    use md5::Digest;
    let server = moto();
    let proxy = support::proxy::Proxy::start(&server.endpoint, Vec::new(), None).await;
    let raw = [7u8; 32];
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    let key_md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(raw));
    let options = S3Options {
        sse_customer_key: Some(key.as_str().into()),
        endpoint_url: Some(proxy.endpoint.clone()),
        ..multipart_options()
    };
    let storage = server.storage(options.clone());
    let local = tempfile::NamedTempFile::new().expect("local file");
    std::fs::write(local.path(), vec![b'f'; 6 * MIB]).expect("write");
    let saves = [
        ("small.txt", Content::from("secret"), 6),
        ("file.bin", Content::from_path(local.path()), 6 * MIB),
        ("stream.bin", Content::from_reader(std::io::Cursor::new(vec![b's'; 6 * MIB])), 6 * MIB),
    ];
    for (name, content, size) in saves {
        assert_eq!(storage.save(name, content).await.expect("save"), name);
        assert!(storage.exists(name).await.expect("exists"));
        assert_eq!(storage.size(name).await.expect("size"), size as u64);
        assert_eq!(storage.open(name).await.expect("open").read_all().await.expect("read").len(), size);
    }
    storage.listdir("").await.expect("listdir");
    storage.delete("small.txt").await.expect("delete");

    let heads = proxy.heads.lock().expect("heads").clone();
    let has = |head: &str, prefix: &str| {
        let lower = head.to_ascii_lowercase();
        lower.contains(&format!("{prefix}server-side-encryption-customer-algorithm: aes256"))
            && head.contains(&key)
            && lower
                .contains(&format!("{prefix}server-side-encryption-customer-key-md5: {}", key_md5.to_ascii_lowercase()))
    };
    let (mut keyed, mut copies) = (0, 0);
    for head in &heads {
        let line = head.lines().next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let bucket_level = !path.trim_start_matches('/').contains('/');
        let object_request = matches!(method, "PUT" | "GET" | "HEAD" | "POST") && !bucket_level;
        if method == "DELETE" || bucket_level {
            assert!(!head.contains(&key), "a request that needs no key carried it: {line}");
        } else if object_request {
            assert!(has(head, "x-amz-"), "an object request without the key: {line}");
            keyed += 1;
        }
        if head.to_ascii_lowercase().contains("x-amz-copy-source:") {
            assert!(has(head, "x-amz-copy-source-"), "a copy without the source's key: {line}");
            copies += 1;
        }
    }
    println!("{keyed} object requests carried the key; {copies} part copies the source's too");
    assert!(keyed >= 12 && copies >= 1, "{keyed} keyed, {copies} copies of {} requests", heads.len());

    // A key that is not base64 of 32 bytes is a settings error that does not repeat it.
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let error =
        storage_s3::S3Storage::new("s3", S3Options { sse_customer_key: Some(short.as_str().into()), ..options })
            .expect_err("a 16-byte key");
    assert!(error.to_string().contains("sse_customer_key") && error.to_string().contains("16 bytes"), "{error}");
    assert!(!error.to_string().contains(&short), "{error}");
}

/// `S3StaticStorage` and `S3ManifestStaticStorage` (and the `s3boto3` spellings) resolve: static storages
/// make unsigned URLs unless `querystring_auth` is set, and the manifest one answers `url()` with the hashed
/// name its `staticfiles.json` lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_storages_resolve_with_django_storages_defaults() {
    use figment::providers::{Format, Toml};
    use storage_core::{Settings, Storages};
    let server = moto();
    let table = |alias: &str, backend: &str, extra: &str| {
        format!(
            "[storages.{alias}]\nbackend = {backend:?}\nendpoint_url = {:?}\nbucket_name = {:?}\naccess_key = \"AKIDMOTO\"\n\
             secret_key = \"moto\"\nauto_create_bucket = true\n{extra}",
            server.endpoint,
            support::fresh_bucket()
        )
    };
    let settings = [
        table("static", "storages.backends.s3.S3StaticStorage", ""),
        table("boto3", "storages.backends.s3boto3.S3StaticStorage", ""),
        table("signed", "storages.backends.s3.S3StaticStorage", "querystring_auth = true\n"),
        table("manifest", "storages.backends.s3boto3.S3ManifestStaticStorage", ""),
    ]
    .concat();
    let storages = Storages::new(Settings::empty().merge(Toml::string(&settings)));
    for alias in ["static", "boto3"] {
        let url = storages.get(alias).expect(alias).url("css/app.css").await.expect("url");
        assert!(url.ends_with("/css/app.css") && !url.contains("X-Amz-Signature"), "{url}");
    }
    let signed = storages.get("signed").expect("signed").url("css/app.css").await.expect("url");
    assert!(signed.contains("X-Amz-Signature="), "{signed}");

    let manifest = storages.get("manifest").expect("manifest");
    assert!(manifest.capabilities().manifest, "collectstatic hashes for it");
    let paths = r#"{"paths": {"css/app.css": "css/app.0123456789ab.css"}, "version": "1.1", "hash": "x"}"#;
    manifest.save("staticfiles.json", paths.into()).await.expect("save the manifest");
    let url = manifest.url("css/app.css").await.expect("url");
    assert!(url.ends_with("/css/app.0123456789ab.css") && !url.contains("X-Amz-Signature"), "{url}");
    let missing = manifest.url("css/none.css").await.expect_err("not in the manifest").to_string();
    assert!(missing.contains("Missing staticfiles manifest entry for 'css/none.css'"), "{missing}");
}
