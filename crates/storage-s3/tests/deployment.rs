//! S3Storage as deployments meet it, against moto_server: instance credentials, slow and stalled links, lost
//! answers and resets, services without DeleteObjects or conditional writes, keys written by other tools,
//! gzipped objects, reserved names, bad numbers. Faults come from a loopback proxy (`support/proxy.rs`).

mod support;

use std::time::Duration;
use storage_core::{Error, ErrorKind, NameRule, Storage};
use storage_s3::{AddressingStyle, ConditionalWrites, S3Options, S3Storage};
use support::moto;
use support::proxy::{Fault, Proxy, Rule};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;

fn rule(method: &'static str, target_contains: &'static str, occurrences: &[usize], fault: Fault) -> Rule {
    Rule { method, target_contains, occurrences: occurrences.to_vec(), fault }
}

/// Options for a fresh moto bucket reached through `proxy`.
fn through(proxy: &Proxy) -> S3Options {
    S3Options { endpoint_url: Some(proxy.endpoint.clone()), ..moto().options() }
}

/// Options through `proxy` under which anything over 5 MiB is saved in parts and read in ranges, of 5 MiB.
fn ranged_reads(proxy: &Proxy) -> S3Options {
    S3Options {
        multipart_threshold: 5 * MIB as u64,
        multipart_chunksize: 5 * MIB as u64,
        parallel_read_threshold: 5 * MIB as u64,
        ..through(proxy)
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// With no keys, credentials come from the instance metadata service (IMDSv2: a token, then the role's
/// credentials), here moto's, named by `AWS_EC2_METADATA_SERVICE_ENDPOINT`. The bucket is addressed by virtual
/// host, as on AWS, through an HTTP proxy (moto again) that resolves it. The first operation once hung forever:
/// the token request was taken for an upload and signed with the credentials it was fetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_credentials_from_the_metadata_service() {
    let server = moto();
    let bucket = support::fresh_bucket();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("storages.toml");
    std::fs::write(&config, "[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\n").expect("config");
    let env = [
        ("AWS_STORAGE_BUCKET_NAME", bucket.as_str()),
        ("AWS_S3_ENDPOINT_URL", "http://s3.amazonaws.com"),
        ("AWS_S3_ADDRESSING_STYLE", "virtual"),
        ("AWS_S3_PROXY_URL", server.endpoint.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.endpoint.as_str()),
        ("AWS_AUTO_CREATE_BUCKET", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = storage_core::Settings::from_file_and_env(&config, env).expect("settings");
    let storage = storage_core::Storages::new(settings).get("default").expect("storage");
    let work = async {
        let name = storage.save("media/hello.txt", "hello".into()).await.expect("save");
        assert_eq!(name, "media/hello.txt");
        assert_eq!(storage.open(&name).await.expect("open").read_all().await.expect("read"), "hello");
        storage.delete(&name).await.expect("delete");
        assert!(!storage.exists(&name).await.expect("exists"));
    };
    tokio::time::timeout(Duration::from_secs(300), work).await.expect("instance credentials must not hang");
}

/// Where no instance metadata service answers, a storage without keys fails at once, saying it could not get
/// credentials. (It once hung forever before sending anything: the token request was taken for an upload of
/// `latest/api/token` under virtual-host addressing and signed with the credentials it was to fetch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_instance_credentials_fail_instead_of_hanging() {
    let options = S3Options {
        bucket_name: "media".into(),
        metadata_endpoint: Some("http://127.0.0.1:9".into()),
        max_retries: 1,
        ..S3Options::default()
    };
    let storage = S3Storage::new("s3", options).expect("storage");
    let error = tokio::time::timeout(Duration::from_secs(120), storage.save("a.txt", "x".into()))
        .await
        .expect("no hang")
        .expect_err("no credentials");
    assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{error}");
    assert!(error.to_string().contains("could not get credentials"), "{error}");
    // Signing a URL needs credentials too: the error says so, not that the endpoint is unreachable.
    let error = tokio::time::timeout(Duration::from_secs(120), storage.url("a.txt"))
        .await
        .expect("no hang")
        .expect_err("no credentials");
    assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{error}");
    assert!(error.to_string().contains("could not get credentials to sign the URL"), "{error}");
}

/// A slow link that keeps moving never times out, whatever the transfer takes; a stalled one does, after
/// `request_timeout` without a byte, naming the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_transfers_finish_and_stalled_ones_time_out() {
    let server = moto();
    // 256 KiB/s each way: 2 MiB take 8 s, over twice the 3 s request_timeout.
    let slow = Proxy::start(&server.endpoint, Vec::new(), Some(256 * 1024)).await;
    let options = S3Options { request_timeout: 3.0, multipart_threshold: 8 * MIB as u64, ..through(&slow) };
    let storage = S3Storage::new("s3", options).expect("storage");
    let data = content(2 * MIB);
    let name = storage.save("slow.bin", data.clone().into()).await.expect("a slow upload that progresses");
    let read = storage.open(&name).await.expect("open").read_all().await.expect("a slow download that progresses");
    assert!(read == data, "the slow download differs");

    let stalled = Proxy::start(&server.endpoint, vec![rule("GET", "stalled.txt", &[], Fault::LoseAnswer)], None).await;
    let options = S3Options { request_timeout: 1.0, max_retries: 1, ..through(&stalled) };
    let storage = S3Storage::new("s3", options).expect("storage");
    storage.save("stalled.txt", "x".into()).await.expect("save");
    let error = match storage.open("stalled.txt").await {
        Ok(file) => file.read_all().await.expect_err("a stalled GET"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("timed out") && message.contains("request_timeout"), "{message}");
}

/// A conditional PutObject that reached the server but whose answer was cut off (a reset) is retried; the retry
/// finds the name taken, by this very save (its token), and the save answers that name: one object, no
/// duplicate under an alternative name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_after_a_stored_put_answers_the_stored_name() {
    let server = moto();
    let proxy =
        Proxy::start(&server.endpoint, vec![rule("PUT", "/x.txt", &[1], Fault::ResetAfterForwarding)], None).await;
    let options = through(&proxy);
    let bucket = options.bucket_name.clone();
    let storage = S3Storage::new("s3", options).expect("storage");
    let name = storage.save("x.txt", "same bytes".into()).await.expect("a save whose answer was lost");
    assert_eq!(name, "x.txt");
    assert!(proxy.matched(0) >= 2, "the PutObject was not retried");
    assert_eq!(server.all_keys(&bucket), r#"["x.txt"]"#);
    // Someone else's object under the name is still someone else's.
    assert_eq!(storage.save("x.txt", "same bytes".into()).await.expect("save"), "x_.txt");
}

/// A gateway that answers 503 after its upstream stored the object: the retry finds the name taken by this save's
/// own object, and the save answers that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_error_after_a_stored_put_answers_the_stored_name() {
    let server = moto();
    let replaced = Fault::ReplaceAnswer(503, "ServiceUnavailable");
    let proxy = Proxy::start(&server.endpoint, vec![rule("PUT", "/r.txt", &[1], replaced)], None).await;
    let options = through(&proxy);
    let bucket = options.bucket_name.clone();
    let storage = S3Storage::new("s3", options).expect("storage");
    assert_eq!(storage.save("r.txt", "bytes".into()).await.expect("save"), "r.txt");
    assert!(proxy.matched(0) >= 2, "the PutObject was not retried");
    assert_eq!(server.all_keys(&bucket), r#"["r.txt"]"#);
}

/// A CompleteMultipartUpload whose answer is lost past `request_timeout` ends in success: exactly one object
/// under the name, no duplicate, nothing pending. Bytes go straight to their name (one Complete); a one-shot
/// stream is staged, then published by a copy (two). The retry gets what AWS S3 answers once the first attempt
/// completed (moto would complete again): `NoSuchUpload`, or 412 for a conditional Complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_complete_answer_ends_in_one_object() {
    let server = moto();
    let cases = [
        ("bytes", 1, Fault::Respond(412, "PreconditionFailed")),
        ("bytes", 1, Fault::Respond(404, "NoSuchUpload")),
        ("stream", 1, Fault::Respond(404, "NoSuchUpload")),
        ("stream", 2, Fault::Respond(412, "PreconditionFailed")),
    ];
    for (kind, lost, retry_answer) in cases {
        let faults = vec![
            rule("POST", "uploadId=", &[lost], Fault::LoseAnswer),
            rule("POST", "uploadId=", &[lost + 1], retry_answer),
        ];
        let proxy = Proxy::start(&server.endpoint, faults, None).await;
        let options = S3Options {
            request_timeout: 2.0,
            multipart_threshold: 5 * MIB as u64,
            multipart_chunksize: 5 * MIB as u64,
            ..through(&proxy)
        };
        let bucket = options.bucket_name.clone();
        let storage = S3Storage::new("s3", options).expect("storage");
        let data = content(12 * MIB);
        let save: storage_core::Content = match kind {
            "bytes" => data.clone().into(),
            _ => storage_core::Content::from_reader(std::io::Cursor::new(data.clone())),
        };
        let case = format!("{kind}, Complete #{lost}, retry answered {retry_answer:?}");
        let name = storage.save("big.bin", save).await.expect(&case);
        assert_eq!(name, "big.bin", "{case}");
        assert!(proxy.matched(1) > lost, "{case}: not retried");
        assert_eq!(server.all_keys(&bucket), r#"["big.bin"]"#, "{case}");
        assert_eq!(server.settled_uploads(&bucket).await, "[]", "{case}");
        assert!(storage.open(&name).await.expect("open").read_all().await.expect("read") == data, "{case}");
    }
}

/// `delete` is one `DELETE /key`; `delete_many` uses DeleteObjects, and single deletes where the service
/// answers 501 NotImplemented to it. A missing key is deleted as far as a caller is concerned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_work_without_delete_objects() {
    let server = moto();
    let storage = server.storage(server.options());
    storage.save("one.txt", "1".into()).await.expect("save");
    storage.delete("one.txt").await.expect("delete");
    storage.delete("one.txt").await.expect("delete a missing file");
    let counts: std::collections::BTreeMap<_, _> = storage.request_counts().into_iter().collect();
    assert_eq!(counts.get("DELETE"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("DELETE_OBJECTS"), None, "{counts:?}");
    assert!(!storage.exists("one.txt").await.expect("exists"));

    let proxy =
        Proxy::start(&server.endpoint, vec![rule("POST", "?delete", &[], Fault::Respond(501, "NotImplemented"))], None)
            .await;
    let storage = S3Storage::new("s3", through(&proxy)).expect("storage");
    let names: Vec<String> = (0..5).map(|i| format!("d/{i}.txt")).collect();
    for name in &names {
        storage.save(name, "x".into()).await.expect("save");
    }
    let mut asked = names.clone();
    asked.push("d/missing.txt".into());
    let failed = storage.delete_many(&asked).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(proxy.matched(0), 1, "DeleteObjects is asked once, then not any more");
    for name in &names {
        assert!(!storage.exists(name).await.expect("exists"), "{name}");
    }
    storage.save("d/again.txt", "x".into()).await.expect("save");
    assert!(storage.delete_many(&["d/again.txt".to_string()]).await.is_empty());
    assert_eq!(proxy.matched(0), 1);
    assert!(!storage.exists("d/again.txt").await.expect("exists"));
}

/// On a service that ignores `If-None-Match`, the probe finds out and saves look for a free name with HEAD
/// first: two saves of one name keep both files, and the storage no longer claims atomic creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_without_conditional_writes_is_found_and_never_overwritten() {
    let server = moto();
    let proxy = Proxy::start(&server.endpoint, vec![rule("PUT", "", &[], Fault::DropIfNoneMatch)], None).await;
    let storage = S3Storage::new("s3", through(&proxy)).expect("storage");
    assert!(storage.capabilities().atomic_create, "assumed until probed");
    assert_eq!(storage.save("a.txt", "first".into()).await.expect("save"), "a.txt");
    assert_eq!(storage.save("a.txt", "second".into()).await.expect("save"), "a_.txt");
    assert_eq!(storage.open("a.txt").await.expect("open").read_all().await.expect("read"), "first");
    assert!(!storage.capabilities().atomic_create, "the probe found no conditional writes");

    let options = S3Options { conditional_writes: ConditionalWrites::Off, ..server.options() };
    let storage = server.storage(options);
    assert!(!storage.capabilities().atomic_create);
    assert_eq!(storage.save("b.txt", "1".into()).await.expect("save"), "b.txt");
    assert_eq!(storage.save("b.txt", "2".into()).await.expect("save"), "b_.txt");
    let counts: std::collections::BTreeMap<_, _> = storage.request_counts().into_iter().collect();
    assert_eq!(counts.get("PROBE"), None, "conditional_writes = off asks nothing: {counts:?}");

    // moto checks the condition: the probe says so once, in three requests.
    let storage = server.storage(server.options());
    storage.save("c.txt", "1".into()).await.expect("save");
    storage.save("d.txt", "1".into()).await.expect("save");
    assert!(storage.capabilities().atomic_create);
    let counts: std::collections::BTreeMap<_, _> = storage.request_counts().into_iter().collect();
    assert_eq!(counts.get("PROBE"), Some(&3), "{counts:?}");
}

/// Keys another tool wrote (`a//b`, `..`, control characters) are skipped, not fatal; folder markers are not
/// files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_keys_never_break_a_listing() {
    let server = moto();
    let options = server.options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("good.txt", "x".into()).await.expect("save");
    storage.save("css/site.css", "x".into()).await.expect("save");
    server.boto3(
        &bucket,
        "for key in ['a//b.txt', 'x/../y.txt', 'ctl\\x01.txt', 'css/', './dot.txt', 'sp ace+plus.txt']:\n    \
         s3.put_object(Bucket=bucket, Key=key, Body=b'foreign')",
    );
    let (dirs, files) = storage.listdir("").await.expect("listdir");
    assert_eq!(files, ["good.txt", "sp ace+plus.txt"]);
    assert!(dirs.contains(&"css".to_string()), "{dirs:?}");
    assert!(!dirs.iter().any(|d| d.is_empty() || d == "." || d.contains('/')), "{dirs:?}");
    let names: Vec<String> = storage.list_files("").await.expect("list_files").into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["css/site.css", "good.txt", "sp ace+plus.txt"]);
    let (_, css) = storage.listdir("css").await.expect("listdir css");
    assert_eq!(css, ["site.css"]);
}

/// With `gzip`, objects are stored compressed and read back as they were saved, as django-storages does;
/// `size` stays the stored size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzipped_objects_read_back_decompressed() {
    let server = moto();
    let storage = server.storage(S3Options { gzip: true, ..server.options() });
    let css = "body { color: red }\n".repeat(500);
    let name = storage.save("app.css", css.clone().into()).await.expect("save");
    let file = storage.open(&name).await.expect("open");
    assert!(file.size() < css.len() as u64, "stored compressed");
    assert_eq!(file.read_all().await.expect("read"), css.as_bytes());
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(file.chunks(1000)).await.expect("chunks");
    assert_eq!(chunks.concat(), css.as_bytes());
    assert_eq!(file.range(20..40).await.expect("range"), &css.as_bytes()[20..40]);
}

/// Names under the staging directory, and the record of MD5s, are refused on every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_names_are_reserved() {
    let server = moto();
    let storage = server.storage(server.options());
    let name = ".storages-staging/report.pdf";
    let reserved = |error: Error| matches!(error, Error::SuspiciousName { rule: NameRule::Reserved, .. });
    assert!(reserved(storage.save(name, "x".into()).await.expect_err("save")));
    assert!(reserved(storage.open(name).await.expect_err("open")));
    assert!(reserved(storage.exists(name).await.expect_err("exists")));
    assert!(reserved(storage.delete(name).await.expect_err("delete")));
    assert!(reserved(storage.open_write(name).await.expect_err("open_write")));
    assert!(reserved(storage.listdir(".storages-staging").await.expect_err("listdir")));
    assert!(reserved(storage.url(name).await.expect_err("url")));
    // The record of MD5s, named by a single space at the root, too.
    assert!(reserved(storage.save(" ", "x".into()).await.expect_err("save")));
    assert!(reserved(storage.delete(" ").await.expect_err("delete")));
    assert!(storage.save(" a.txt", "x".into()).await.is_ok(), "other names starting with a space are free");
    assert_eq!(storage.listdir("").await.expect("listdir").1, [" a.txt"], "and listed");
}

/// A writer whose upload failed reports that failure on every later call, never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_writer_reports_its_error_again() {
    let server = moto();
    let options = S3Options { auto_create_bucket: false, ..server.options() };
    let storage = server.storage(options);
    let mut writer = storage.open_write("a.bin").await.expect("open_write");
    let mut first = None;
    for _ in 0..64 {
        if let Err(error) = writer.write_all(&[0u8; 64 * 1024]).await {
            first = Some(error.to_string());
            break;
        }
    }
    let second = writer.write_all(b"more").await.expect_err("a write after the failure").to_string();
    let commit = writer.commit().await.expect_err("commit after the failure").to_string();
    for message in [&second, &commit].into_iter().chain(first.as_ref()) {
        assert!(message.contains("does not exist"), "{message}");
    }
}

/// Numbers out of S3's ranges are settings errors naming the key.
#[test]
fn numbers_out_of_range_are_refused() {
    let endpoint = |url: &str| S3Options { endpoint_url: Some(url.into()), ..S3Options::default() };
    let cases: [(&str, S3Options); 11] = [
        ("endpoint_url", endpoint("http://256.1.1.1:80")),
        ("endpoint_url", endpoint("ftp://127.0.0.1")),
        ("endpoint_url", endpoint("127.0.0.1:9000")),
        ("request_timeout", S3Options { request_timeout: -1.0, ..S3Options::default() }),
        ("request_timeout", S3Options { request_timeout: 1e30, ..S3Options::default() }),
        ("retry_timeout", S3Options { retry_timeout: f64::NAN, ..S3Options::default() }),
        ("connect_timeout", S3Options { connect_timeout: 0.0, ..S3Options::default() }),
        ("querystring_expire", S3Options { querystring_expire: 604_801, ..S3Options::default() }),
        ("multipart_threshold", S3Options { multipart_threshold: 6 << 30, ..S3Options::default() }),
        ("multipart_chunksize", S3Options { multipart_chunksize: 6 << 30, ..S3Options::default() }),
        ("multipart_chunksize", S3Options { multipart_chunksize: 1 << 20, ..S3Options::default() }),
    ];
    for (key, options) in cases {
        let options = S3Options { bucket_name: "b".into(), addressing_style: Some(AddressingStyle::Path), ..options };
        let error = S3Storage::new("s3", options).expect_err(key);
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        assert!(error.to_string().contains(&format!("`{key}`")) || error.to_string().contains(key), "{error}");
    }
}

/// A `location` with a leading slash is refused as django-storages refuses it, naming the fix; one without
/// (a trailing slash is fine) is kept as the prefix.
#[test]
fn a_location_with_a_leading_slash_is_refused() {
    let options = |location: &str| S3Options {
        bucket_name: "b".into(),
        location: location.into(),
        addressing_style: Some(AddressingStyle::Path),
        ..S3Options::default()
    };
    let error = S3Storage::new("s3", options("/")).expect_err("a leading slash");
    assert!(error.to_string().contains("cannot begin with a leading slash. Found '/'. Use '' instead."), "{error}");
    let error = S3Storage::new("s3", options("/media/")).expect_err("a leading slash");
    assert!(error.to_string().contains("Use 'media/' instead"), "{error}");
    assert!(S3Storage::new("s3", options("media/")).is_ok());
}

/// Objects encrypted with KMS have an ETag that is not their MD5: `stat` says no MD5 then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_encrypted_objects_have_no_md5() {
    let server = moto();
    let options = server.options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("plain.txt", "x".into()).await.expect("save");
    server.boto3(&bucket, "s3.put_object(Bucket=bucket, Key='kms.txt', Body=b'x', ServerSideEncryption='aws:kms')");
    assert!(storage.stat("plain.txt").await.expect("stat").md5.is_some());
    assert_eq!(storage.stat("kms.txt").await.expect("stat").md5, None);

    // A storage that encrypts with KMS itself claims no MD5 from a listing's ETags.
    let kms = server.storage(S3Options {
        bucket_name: bucket.clone(),
        server_side_encryption: Some("aws:kms".into()),
        ..server.options()
    });
    kms.save("mine.txt", "x".into()).await.expect("save");
    let listed = kms.list_files("").await.expect("list");
    assert!(listed.iter().all(|file| file.md5.is_none()), "{listed:?}");
}

/// A large save whose future is dropped halfway (here while its CompleteMultipartUpload is held by the proxy)
/// leaves no pending upload, no claim and no object: the upload is aborted and the claim deleted from tasks of
/// their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_save_dropped_halfway_leaves_nothing_behind() {
    let server = moto();
    // Holds the Complete until a second one comes, which never does.
    let gated = Proxy::start(&server.endpoint, vec![rule("POST", "uploadId=", &[1], Fault::Gate(2))], None).await;
    let options =
        S3Options { multipart_threshold: 5 * MIB as u64, multipart_chunksize: 5 * MIB as u64, ..through(&gated) };
    let bucket = options.bucket_name.clone();
    let storage = std::sync::Arc::new(server.storage(options));
    let saving = storage.clone();
    let save = tokio::spawn(async move { saving.save("big.bin", content(11 * MIB).into()).await });
    // An outcome to wait for, not a duration: the Complete reached the proxy (with a deadline against a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while gated.matched(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the save never reached its Complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    save.abort();
    assert!(save.await.expect_err("dropped").is_cancelled());
    assert_eq!(storage.settle().await, Vec::<String>::new(), "nothing was stored");

    assert_eq!(server.settled_uploads(&bucket).await, "[]", "the upload was aborted");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let keys = loop {
        let keys = server.all_keys(&bucket);
        if !keys.contains(".storages-staging") || std::time::Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(keys, "[]", "no claim and no object left");
}

/// A save dropped after its Complete reached the server (its answer lost on the way) did store its file:
/// `settle` says so, instead of the caller believing it abandoned.
#[tokio::test]
async fn a_save_dropped_after_its_complete_is_reported_stored() {
    let server = moto();
    let lost = Proxy::start(&server.endpoint, vec![rule("POST", "uploadId=", &[1], Fault::LoseAnswer)], None).await;
    let options =
        S3Options { multipart_threshold: 5 * MIB as u64, multipart_chunksize: 5 * MIB as u64, ..through(&lost) };
    let direct = server.storage(S3Options { endpoint_url: Some(server.endpoint.clone()), ..options.clone() });
    let storage = std::sync::Arc::new(server.storage(options));
    let saving = storage.clone();
    let save = tokio::spawn(async move { saving.save("done.bin", content(11 * MIB).into()).await });
    // Outcomes to wait for: the Complete was forwarded, and the server completed the object.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !direct.exists("done.bin").await.expect("exists") {
        assert!(std::time::Instant::now() < deadline, "the Complete never went through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    save.abort();
    assert!(save.await.expect_err("dropped").is_cancelled());
    assert_eq!(storage.settle().await, ["done.bin"], "the dropped save's file is reported");
    assert_eq!(direct.size("done.bin").await.expect("size"), 11 * MIB as u64);
}

/// A ranged GET whose answer is cut short (the connection closes mid-body) never makes a read return short or
/// wrong content: the range is fetched again from where it stopped, and when that keeps failing the read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_cut_short_never_yields_short_content() {
    let server = moto();
    let content = content(23 * MIB);
    // The third GET of the object (one of the ranges after `open`'s own) is cut once.
    let once =
        Proxy::start(&server.endpoint, vec![rule("GET", "cut.bin", &[3], Fault::CutAnswer(64 * 1024))], None).await;
    let storage = server.storage(ranged_reads(&once));
    storage.save("cut.bin", content.clone().into()).await.expect("save");
    let read = storage.open("cut.bin").await.expect("open").read_all().await.expect("a range cut once is resumed");
    assert!(read[..] == content[..], "a read returned {} bytes of {}", read.len(), content.len());
    assert_eq!(once.matched(0), 6, "open's GET, 4 ranges, and the rest of the cut one");

    // Every GET after the second is cut: the read fails, whatever it yielded before.
    let always = (3..100).collect::<Vec<_>>();
    let rules = vec![rule("GET", "cut.bin", &always, Fault::CutAnswer(64 * 1024))];
    let cutting = Proxy::start(&server.endpoint, rules, None).await;
    let bucket = S3Options { bucket_name: storage.options().bucket_name.clone(), ..ranged_reads(&cutting) };
    let storage = server.storage(bucket);
    let error = storage.open("cut.bin").await.expect("open").read_all().await.expect_err("ranges keep being cut");
    println!("ranges cut every time: {error}");
}

/// A read as one stream (`open`'s GET, `parallel_read_threshold = 0`) whose connection is cut mid-body goes on
/// from where it stopped, pinned to the version `open` saw: the content comes whole, in one more GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_stream_cut_mid_body_is_resumed() {
    let server = moto();
    let content = content(6 * MIB);
    // The second GET of the object (`open`'s, after the save's) is cut once, 1 MiB in.
    let once = Proxy::start(&server.endpoint, vec![rule("GET", "one.bin", &[1], Fault::CutAnswer(MIB))], None).await;
    let storage = server.storage(S3Options { parallel_read_threshold: 0, ..through(&once) });
    storage.save("one.bin", content.clone().into()).await.expect("save");
    let read = storage.open("one.bin").await.expect("open").read_all().await.expect("a stream cut once is resumed");
    assert!(read[..] == content[..], "a read returned {} bytes of {}", read.len(), content.len());
    assert_eq!(once.matched(0), 2, "open's GET, and the rest of it");
}

/// A ranged GET answered well-formed but with less than it was asked for (a `Content-Length` and body 100 bytes
/// short) fails the read: it never returns short content as whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_answered_short_fails_the_read() {
    let server = moto();
    let short =
        Proxy::start(&server.endpoint, vec![rule("GET", "short.bin", &[3], Fault::ShortenAnswer(100))], None).await;
    let storage = server.storage(ranged_reads(&short));
    storage.save("short.bin", content(23 * MIB).into()).await.expect("save");
    let read = storage.open("short.bin").await.expect("open").read_all().await;
    assert!(short.matched(0) >= 3, "the ranges went through the proxy");
    let error = read.expect_err("a range that came 100 bytes short");
    println!("a range answered short: {error}");
}

/// The same for a partial read (`range`), which is one GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_read_answered_short_fails() {
    let server = moto();
    let short =
        Proxy::start(&server.endpoint, vec![rule("GET", "part.bin", &[2], Fault::ShortenAnswer(10))], None).await;
    let storage = server.storage(through(&short));
    storage.save("part.bin", content(1000).into()).await.expect("save");
    let file = storage.open("part.bin").await.expect("open");
    let error = file.range(100..600).await.expect_err("a range that came 10 bytes short");
    assert!(error.to_string().contains("ended after 490 of its 500 bytes"), "{error}");
}

/// The key of django-storages' CloudFront tests.
const CLOUDFRONT_PEM: &str = include_str!("data/cloudfront-test-key.pem");

/// With a custom domain, `querystring_auth` and a CloudFront key pair, URLs are signed for CloudFront with a
/// canned policy that the key's public half verifies, valid for `querystring_expire` (or the expiry asked for)
/// from the moment of the call; without `querystring_auth` they are plain; one half of the pair alone is a
/// settings error in django-storages' words. (The exact bytes of django-storages' test vector are checked in
/// `cloudfront.rs`, where the time can be given.)
#[tokio::test]
async fn cloudfront_urls_are_signed_with_a_canned_policy() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::signature::Verifier;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let options = S3Options {
        bucket_name: "b".into(),
        custom_domain: Some("mock.cloudfront.net".into()),
        cloudfront_key_id: Some("test-key".into()),
        cloudfront_key: Some(CLOUDFRONT_PEM.into()),
        querystring_expire: 600,
        ..S3Options::default()
    };
    let storage = S3Storage::new("s3", options.clone()).expect("storage");
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let before = now();
    let url = storage.url("file.txt").await.expect("url");
    let after = now();
    let (base, query) = url.split_once('?').expect("a query");
    assert_eq!(base, "https://mock.cloudfront.net/file.txt");
    let params: std::collections::BTreeMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(params["Key-Pair-Id"], "test-key");
    let expires: u64 = params["Expires"].parse().expect("Expires");
    assert!((before + 600..=after + 600).contains(&expires), "{expires} not within 600 s of the call");
    let policy = format!(
        r#"{{"Statement":[{{"Resource":"{base}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    );
    let signature = params["Signature"].replace('-', "+").replace('_', "=").replace('~', "/");
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD.decode(signature).expect("base64");
    let public = rsa::RsaPrivateKey::from_pkcs1_pem(CLOUDFRONT_PEM).expect("key").to_public_key();
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(public);
    let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).expect("signature");
    verifier.verify(policy.as_bytes(), &signature).expect("the key's public half verifies the policy");

    let options_url = storage_core::UrlOptions::new().expires_in(Duration::from_secs(60)).parameter("version", "10");
    let url = storage.url_with("file.txt", &options_url).await.expect("url");
    assert!(url.starts_with("https://mock.cloudfront.net/file.txt?version=10&Expires="), "{url}");

    let plain = S3Storage::new("s3", S3Options { querystring_auth: false, ..options.clone() }).expect("storage");
    assert_eq!(plain.url("file.txt").await.expect("url"), "https://mock.cloudfront.net/file.txt");

    let together =
        "Both AWS_CLOUDFRONT_KEY_ID/cloudfront_key_id and AWS_CLOUDFRONT_KEY/cloudfront_key must be provided together.";
    for half in [
        S3Options { cloudfront_key: None, ..options.clone() },
        S3Options { cloudfront_key_id: None, ..options.clone() },
    ] {
        let error = S3Storage::new("s3", half).expect_err("half a key pair");
        assert!(error.to_string().contains(together), "{error}");
    }
    let error = S3Storage::new("s3", S3Options { cloudfront_key: Some("sekrit-pem".into()), ..options })
        .expect_err("not a key");
    let message = error.to_string();
    assert!(message.contains("cloudfront_key") && message.contains("is not an RSA private key"), "{message}");
    assert!(!message.contains("sekrit-pem"), "{message}");
}
