//! S3Storage against s3s-fs, which checks SigV4 signatures, presigned-URL expiry and body checksums.

mod support;

use storage_core::Storage;
use storage_s3::{ChecksumMode, S3Options};
use support::s3s;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_works_with_plain_http_until_it_expires() {
    let server = s3s();
    let storage = server.storage(server.options());
    storage.save("docs/report one.txt", "quarterly numbers".into()).await.expect("save");

    let url = storage.url("docs/report one.txt").await.expect("url");
    let response = reqwest::get(&url).await.expect("GET");
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.text().await.expect("body"), "quarterly numbers");

    // A URL is valid for the time asked for: one of a minute works (however busy the machine), one of a second
    // is refused once more than a second has passed since it was signed (its X-Amz-Date is at or before that).
    let minute = storage.url_expiring("docs/report one.txt", std::time::Duration::from_secs(60)).await.expect("url");
    assert!(minute.contains("X-Amz-Expires=60"), "{minute}");
    assert_eq!(reqwest::get(&minute).await.expect("GET").status(), 200);
    let short = storage.url_expiring("docs/report one.txt", std::time::Duration::from_secs(1)).await.expect("url");
    assert!(short.contains("X-Amz-Expires=1&"), "{short}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let expired = reqwest::get(&short).await.expect("GET");
    assert_eq!(expired.status(), 403, "an expired URL must be refused");

    // Tampering with the signed URL is refused too.
    let tampered = url.replace("report%20one", "report%20two");
    assert_eq!(reqwest::get(&tampered).await.expect("GET").status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_an_authentication_error_naming_the_endpoint_not_the_secret() {
    let server = s3s();
    let good = server.storage(server.options());
    good.save("a.txt", "x".into()).await.expect("save with the right secret");

    let wrong_secret = "wr0ng-s3cr3t-value";
    let options = S3Options {
        secret_key: Some(wrong_secret.into()),
        bucket_name: good.options().bucket_name.clone(),
        ..server.options()
    };
    let storage = server.storage(options);
    let save = storage.save("b.txt", "x".into()).await.expect_err("wrong secret").to_string();
    println!("save with a wrong secret: {save}");
    assert!(save.contains(&server.endpoint), "{save}");
    assert!(save.contains("refused the credentials"), "{save}");
    assert!(save.contains("SignatureDoesNotMatch"), "{save}");
    let error = storage.save("b.txt", "x".into()).await.expect_err("wrong secret");
    assert_eq!(error.kind(), storage_core::ErrorKind::Unauthenticated, "{error}");
    assert!(!error.is_retryable(), "{error}");
    let head = storage.exists("a.txt").await.expect_err("wrong secret").to_string();
    println!("exists with a wrong secret: {head}");
    assert!(head.contains("403 Forbidden") && head.contains("s3:ListBucket"), "{head}");
    for message in [&save, &head, &format!("{storage:?}")] {
        assert!(!message.contains(wrong_secret) && !message.contains(&server.secret_key), "{message}");
    }
}

/// s3s-fs recomputes `Content-MD5` and `x-amz-checksum-*` and refuses a body that does not match: a save that
/// succeeds sent the right checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_accepted_by_a_server_that_verifies_them() {
    let server = s3s();
    for checksum in [ChecksumMode::None, ChecksumMode::Md5, ChecksumMode::Crc32, ChecksumMode::Sha256] {
        let options = S3Options {
            checksum,
            multipart_threshold: 5 * 1024 * 1024,
            multipart_chunksize: 5 * 1024 * 1024,
            file_overwrite: true,
            ..server.options()
        };
        let storage = server.storage(options);
        let small = storage_testkit::Blob { len: 100_000, seed: 1 }.bytes();
        let large = storage_testkit::Blob { len: 11 * 1024 * 1024, seed: 2 }.bytes();
        for (name, content) in [("small.bin", &small), ("large.bin", &large)] {
            storage.save(name, content.clone().into()).await.unwrap_or_else(|e| panic!("{checksum:?} {name}: {e}"));
            let read = storage.open(name).await.expect("open").read_all().await.expect("read");
            assert!(read == content[..], "{checksum:?} {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_and_cache_control_reach_the_object_here_too() {
    let server = s3s();
    let options = S3Options {
        headers: [("Cache-Control", "max-age=86400"), ("Expires", "Thu, 15 Apr 2010 20:00:00 GMT")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ..server.options()
    };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    storage.save("style.css", "a{}".into()).await.expect("save");
    let head = server.boto3(
        &bucket,
        "h = s3.head_object(Bucket=bucket, Key='style.css')['ResponseMetadata']['HTTPHeaders']\n\
         print(h.get('cache-control'), '|', h.get('expires'), '|', h.get('content-type'))",
    );
    assert_eq!(head, "max-age=86400 | Thu, 15 Apr 2010 20:00:00 GMT | text/css");
}

/// The default path for large content (staging, ranged multipart copy, conditional completion) on the server
/// that checks every signature, the copy requests' included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_saves_publish_through_signed_copies() {
    let server = s3s();
    let options =
        S3Options { multipart_threshold: 5 * 1024 * 1024, multipart_chunksize: 5 * 1024 * 1024, ..server.options() };
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options);
    let first = storage_testkit::Blob { len: 11 * 1024 * 1024, seed: 3 }.bytes();
    let second = storage_testkit::Blob { len: 6 * 1024 * 1024, seed: 4 }.bytes();
    assert_eq!(storage.save("v/clip.mp4", first.clone().into()).await.expect("save"), "v/clip.mp4");
    assert_eq!(storage.save("v/clip.mp4", second.clone().into()).await.expect("save"), "v/clip_.mp4");
    assert!(storage.open("v/clip.mp4").await.expect("open").read_all().await.expect("read") == first[..]);
    assert!(storage.open("v/clip_.mp4").await.expect("open").read_all().await.expect("read") == second[..]);
    let keys = server.all_keys(&bucket);
    assert_eq!(keys, r#"["v/clip.mp4", "v/clip_.mp4"]"#, "no staging object may be left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_never_reaches_an_error_message() {
    let server = s3s();
    let token = "FwoGZXIvYXdzEXAMPLE-session-t0ken";
    let options = S3Options {
        security_token: Some(token.into()),
        secret_key: Some("wrong-s3cr3t-for-token-test".into()),
        ..server.options()
    };
    let storage = server.storage(options);
    for message in [
        storage.save("a.txt", "x".into()).await.expect_err("refused").to_string(),
        storage.exists("a.txt").await.expect_err("refused").to_string(),
        storage.listdir("").await.expect_err("refused").to_string(),
        format!("{storage:?}"),
    ] {
        assert!(!message.contains(token) && !message.contains("wrong-s3cr3t"), "{message}");
    }
}

/// 32 concurrent large saves of one name keep 32 objects, even when their Completes reach s3s-fs at once (see
/// [`support::Server::race_large_saves`]); s3s-fs checks `If-None-Match` without atomicity. (It does not list
/// multipart uploads: pending ones are checked on moto.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_large_saves_of_one_name_lose_nothing() {
    s3s().race_large_saves(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_read_in_concurrent_ranges() {
    s3s().read_large_objects_in_ranges().await;
}

/// s3s-fs lists no ETag: without the record, collectstatic would copy every file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_md5s_hold_until_the_object_changes() {
    s3s().recorded_md5s_hold_until_the_object_changes(false).await;
}

/// django-storages' `url(name, parameters, expire, http_method)`: a presigned URL signs its method, response
/// overrides and parameters, and works as asked (a HEAD, a browser's PUT, a download named by the override);
/// a custom domain's URL carries parameters and names directories as django-storages does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_options_make_the_urls_django_storages_makes() {
    use storage_core::{UrlMethod, UrlOptions};
    // s3s-fs checks signatures: a URL whose extra query were not signed would be refused (moto honours no
    // response override).
    let server = s3s();
    let options = server.options();
    let bucket = options.bucket_name.clone();
    let storage = server.storage(options.clone());
    storage.save("report.csv", "a,b\n".into()).await.expect("save");

    let download = UrlOptions::new()
        .expires_in(std::time::Duration::from_secs(120))
        .response_content_disposition("attachment; filename=\"r.csv\"")
        .response_content_type("text/csv")
        .parameter("x-id", "GetObject");
    let url = storage.url_with("report.csv", &download).await.expect("url");
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    for part in ["X-Amz-Expires=120", "response-content-disposition=attachment", "response-content-type=text%2Fcsv"] {
        assert!(query.contains(part), "{part} missing from {url}");
    }
    let head_url = storage.url_with("report.csv", &UrlOptions::new().method(UrlMethod::Head)).await.expect("url");
    let put_url = storage.url_with("upload.txt", &UrlOptions::new().method(UrlMethod::Put)).await.expect("url");
    // Used as a browser would: no credentials, only the URLs.
    let seen = server.boto3(
        &bucket,
        &format!(
            "import urllib.request\n\
             r = urllib.request.urlopen({url:?})\n\
             print(r.read().decode().strip(), r.headers['Content-Disposition'], r.headers['Content-Type'])\n\
             r = urllib.request.urlopen(urllib.request.Request({head_url:?}, method='HEAD'))\n\
             print('HEAD', r.status, r.headers['Content-Length'])\n\
             r = urllib.request.urlopen(urllib.request.Request({put_url:?}, data=b'from a browser', method='PUT'))\n\
             print('PUT', r.status)"
        ),
    );
    println!("{seen}");
    assert!(seen.contains("a,b attachment; filename=\"r.csv\" text/csv"), "{seen}");
    assert!(seen.contains("HEAD 200 4") && seen.contains("PUT 200"), "{seen}");
    assert_eq!(storage.open("upload.txt").await.expect("open").read_all().await.expect("read"), "from a browser");
    let week = UrlOptions::new().expires_in(std::time::Duration::from_secs(604_801));
    assert!(storage.url_with("report.csv", &week).await.expect_err("over 7 days").to_string().contains("7 days"));

    let public = server.storage(S3Options { custom_domain: Some("example.com".into()), ..options });
    assert_eq!(public.url("").await.expect("url"), "https://example.com/");
    assert_eq!(public.url("path/").await.expect("url"), "https://example.com/path/");
    assert_eq!(public.url("path/1/").await.expect("url"), "https://example.com/path/1/");
    assert_eq!(public.url("path/1").await.expect("url"), "https://example.com/path/1");
    let versioned = UrlOptions::new().parameter("version", "10");
    assert_eq!(
        public.url_with("filename.mp4", &versioned).await.expect("url"),
        "https://example.com/filename.mp4?version=10"
    );
    let error = public.url_with("a.txt", &UrlOptions::new().method(UrlMethod::Put)).await.expect_err("unsigned PUT");
    assert!(error.to_string().contains("no HTTP method but GET"), "{error}");
}
