//! Secrets never printed: distinctive secret keys and session tokens through every error path of the command and
//! the library, against a loopback server that echoes each request back in its error body (as text, JSON and
//! XML), and in settings files that cannot be read. Every output is searched for every form of the secrets.

mod support;

use storage_s3 as _; // links the S3 backend into the registry

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{stderr, stdout, storages};

const SECRET: &str = "SeCrEt-k3y/xYz+Distinctive=Value";
const TOKEN: &str = "T0kEn-s3ssion/aBc+Distinctive==Mark";
const PASSWORD: &str = "Endp0intPassw0rdDistinct";

/// Every form a secret could be printed in: as is, percent-encoded (query strings), and its distinctive middle.
fn forms() -> Vec<String> {
    let mut forms = Vec::new();
    for secret in [SECRET, TOKEN, PASSWORD] {
        forms.push(secret.to_owned());
        forms.push(percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string());
        forms.push(secret[6..20].to_owned());
    }
    forms
}

/// A server on loopback that answers every request with an error whose body holds the whole request: plain text
/// (400), JSON (403), an S3 error document whose message is the request (400), and text with a 500.
fn echo_server() -> (String, std::sync::Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    request.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let head = request.starts_with("HEAD ");
                let json_escaped = request.replace('\\', "\\\\").replace('"', "\\\"").replace("\r\n", "\\n");
                let xml_escaped = request.replace('&', "&amp;").replace('<', "&lt;");
                let (status, content_type, body) = match n % 4 {
                    0 => ("400 Bad Request", "text/plain", request.clone()),
                    1 => (
                        "403 Forbidden",
                        "application/json",
                        format!("{{\"error\":\"denied\",\"request\":\"{json_escaped}\"}}"),
                    ),
                    2 => (
                        "400 Bad Request",
                        "application/xml",
                        format!(
                            "<?xml version=\"1.0\"?><Error><Code>InvalidRequest</Code><Message>{xml_escaped}</Message></Error>"
                        ),
                    ),
                    _ => ("500 Internal Server Error", "text/plain", format!("echo: {request}")),
                };
                let mut stream = stream;
                let length = if head { 0 } else { body.len() };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                );
                if !head {
                    let _ = stream.write_all(body.as_bytes());
                }
            });
        }
    });
    (address, served)
}

#[test]
fn no_output_shows_a_secret() {
    let (endpoint, served) = echo_server();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.txt"), "content").expect("write");
    let site = support::example_site(dir.path());
    let site = site.to_str().expect("utf-8");
    let env = [
        ("DEFAULT_FILE_STORAGE", "storages.backends.s3.S3Storage"),
        ("STATICFILES_STORAGE", "storages.backends.s3.S3Storage"),
        ("AWS_STORAGE_BUCKET_NAME", "bucket"),
        ("AWS_S3_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", TOKEN),
        ("STORAGES__DEFAULT__MAX_RETRIES", "0"),
        ("STORAGES__STATICFILES__MAX_RETRIES", "0"),
        ("STORAGES__DEFAULT__CONDITIONAL_WRITES", "on"),
    ];
    let mut outputs = Vec::new();
    let commands: &[&[&str]] = &[
        &["put", "local.txt"],
        &["put", "local.txt", "docs/a.txt"],
        &["get", "docs/a.txt", "out.txt"],
        &["cat", "docs/a.txt"],
        &["ls"],
        &["ls", "-l", "docs"],
        &["stat", "docs/a.txt"],
        &["rm", "docs/a.txt", "docs/b.txt"],
        &["url", "docs/a.txt"],
        &["collectstatic", site],
        &["collectstatic", site, "--clear", "--manifest"],
        &["collectstatic", site, "--dry-run"],
    ];
    for round in 0..4 {
        for args in commands {
            let output = storages(dir.path(), args, &env);
            // A presigned URL carries the token by design: the one place it may appear.
            let shown_stdout = if args[0] == "url" { String::new() } else { stdout(&output) };
            outputs.push((format!("round {round}: {args:?}"), format!("{shown_stdout}{}", stderr(&output))));
        }
    }
    // A password in the endpoint URL is a secret too.
    let with_password = endpoint.replace("http://", &format!("http://user:{PASSWORD}@"));
    let mut password_env = env.to_vec();
    password_env.retain(|(key, _)| *key != "AWS_S3_ENDPOINT_URL");
    password_env.push(("AWS_S3_ENDPOINT_URL", with_password.as_str()));
    let output = storages(dir.path(), &["ls"], &password_env);
    outputs.push(("endpoint with a password".into(), format!("{}{}", stdout(&output), stderr(&output))));
    let auto_create = [env.as_slice(), &[("AWS_AUTO_CREATE_BUCKET", "true")]].concat();
    let output = storages(dir.path(), &["put", "local.txt"], &auto_create);
    outputs.push(("auto-create".into(), format!("{}{}", stdout(&output), stderr(&output))));

    // Settings files that cannot be read, with the secret on the line in question.
    let broken = [
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_key = \"{SECRET}\" x\n"),
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_key = \"{SECRET}\n"),
        format!("[storages.default]\nsecurity_token = '{TOKEN}' = 3\n"),
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_key = [\"{SECRET}\"]\n"),
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_kee = \"{SECRET}\"\n"),
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_key = \"\"\"\n{SECRET}\"x\n"),
        format!("[storages.default]\nbackend = \"storages.backends.s3.S3Storage\"\nsecret_key = [\n\"{SECRET}\" x]\n"),
        format!("[storages.default]\nsecurity_tokn = \"{TOKEN}\" x\n"),
    ];
    for (i, text) in broken.iter().enumerate() {
        let file = dir.path().join(format!("broken{i}.toml"));
        std::fs::write(&file, text).expect("write");
        let output = storages(dir.path(), &["--config", file.to_str().expect("utf-8"), "ls"], &[]);
        assert!(!output.status.success(), "settings file {i} was accepted");
        outputs.push((format!("settings file {i}"), stderr(&output)));
    }

    let mut hits = Vec::new();
    for (what, text) in &outputs {
        for form in forms() {
            if text.contains(&form) {
                hits.push(format!("{what}: {form:?} in {text}"));
            }
        }
    }
    storage_testkit::report(&format!(
        "secrets: {} outputs of the command ({} requests echoed back by the server): {} secret hits",
        outputs.len(),
        served.load(Ordering::Relaxed),
        hits.len()
    ));
    assert!(served.load(Ordering::Relaxed) > 40, "the echo server saw too few requests to test anything");
    assert!(hits.is_empty(), "secrets printed:\n{}", hits.join("\n"));
    // The errors still say what happened: the server's refusal, not just a mask.
    let (_, put) = &outputs[0];
    assert!(put.contains("storages:"), "{put}");
}

#[tokio::test]
async fn library_errors_and_debug_show_no_secret() {
    use storage_core::Settings;
    let (endpoint, _) = echo_server();
    let settings = Settings::empty().merge(figment::providers::Serialized::default(
        "storages.default",
        serde_json::json!({
            "backend": "storages.backends.s3.S3Storage",
            "bucket_name": "bucket",
            "endpoint_url": endpoint,
            "access_key": "AKIDEXAMPLE",
            "secret_key": SECRET,
            "security_token": TOKEN,
            "max_retries": 0,
        }),
    ));
    let storage = storage_core::Storages::new(settings).get("default").expect("storage");
    let mut shown = vec![format!("{storage:?}")];
    for round in 0..4 {
        let name = format!("round{round}.txt");
        let errors = [
            storage.save(&name, "x".into()).await.map(drop),
            storage.open(&name).await.map(drop),
            storage.exists(&name).await.map(drop),
            storage.size(&name).await.map(drop),
            storage.delete(&name).await,
            storage.listdir("").await.map(drop),
            storage.stat(&name).await.map(drop),
        ];
        for error in errors.into_iter().filter_map(Result::err) {
            shown.push(format!("{error} {error:?}"));
        }
        for (_, error) in storage.delete_many(std::slice::from_ref(&name)).await {
            shown.push(format!("{error} {error:?}"));
        }
    }
    assert!(shown.len() > 20, "too few errors: {shown:?}");
    for text in &shown {
        for form in forms() {
            assert!(!text.contains(&form), "{form:?} shown in: {text}");
        }
    }
}
