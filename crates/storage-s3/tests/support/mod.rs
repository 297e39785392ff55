//! The S3 servers `cargo xtask test-backends` starts, and storages on fresh buckets of them.

#![allow(dead_code)] // Each test file uses part of this module.

pub mod proxy;

use std::process::Command;
use storage_core::Storage;
use storage_s3::{S3Options, S3Storage};

/// A server's endpoint and credentials, from the environment `cargo xtask test-backends` sets.
pub struct Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

fn var(name: &str) -> String {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
        let test = std::env::args().next().unwrap_or_default();
        let binary = std::path::Path::new(&test).file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let target = binary.rsplit_once('-').map_or(binary, |(name, _)| name);
        format!(
            "{name} is not set: the S3 tests run against the servers `cargo xtask test-backends` starts; run them \
             with `cargo xtask test-backends -p storage-s3 --test {target} [FILTER]`"
        )
    });
    value.expect("an S3 test server")
}

/// moto_server, which accepts any credentials.
pub fn moto() -> Server {
    Server { endpoint: var("STORAGES_TEST_MOTO_ENDPOINT"), access_key: "AKIDMOTO".into(), secret_key: "moto".into() }
}

/// s3s-fs, which checks signatures.
pub fn s3s() -> Server {
    Server {
        endpoint: var("STORAGES_TEST_S3S_ENDPOINT"),
        access_key: var("STORAGES_TEST_S3S_ACCESS_KEY"),
        secret_key: var("STORAGES_TEST_S3S_SECRET_KEY"),
    }
}

/// A bucket name no other test uses.
pub fn fresh_bucket() -> String {
    let random: String = std::iter::repeat_with(fastrand::lowercase).take(12).collect();
    format!("test-{random}")
}

impl Server {
    /// Options for a fresh bucket on this server, created on first use.
    pub fn options(&self) -> S3Options {
        S3Options {
            bucket_name: fresh_bucket(),
            endpoint_url: Some(self.endpoint.clone()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.as_str().into()),
            auto_create_bucket: true,
            max_retries: 2,
            // Generous, so that a loaded machine (CI's 2 cores, `cargo xtask test-backends --stress`) slows the
            // tests down without failing them: a 1 GiB object is read in one GET.
            request_timeout: 600.0,
            retry_timeout: 600.0,
            ..S3Options::default()
        }
    }

    pub fn storage(&self, options: S3Options) -> S3Storage {
        S3Storage::new("s3", options).expect("storage")
    }

    /// Runs `script` with boto3 (as another client would), given `s3` (a client of this server) and `bucket`;
    /// returns what it prints.
    pub fn boto3(&self, bucket: &str, script: &str) -> String {
        let program = format!(
            "import boto3, json, sys\nfrom botocore.config import Config\n\
             s3 = boto3.client('s3', endpoint_url={endpoint:?}, aws_access_key_id={ak:?}, \
             aws_secret_access_key={sk:?}, region_name='us-east-1', config=Config(s3={{'addressing_style': 'path'}}))\n\
             bucket = {bucket:?}\n{script}\n",
            endpoint = self.endpoint,
            ak = self.access_key,
            sk = self.secret_key,
        );
        let output = Command::new("python3").arg("-c").arg(&program).output().expect("python3 with boto3");
        assert!(output.status.success(), "boto3 failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The keys of the multipart uploads still pending in `bucket`, as boto3 lists them.
    pub fn pending_uploads(&self, bucket: &str) -> String {
        self.boto3(
            bucket,
            "print(json.dumps([u['Key'] for u in s3.list_multipart_uploads(Bucket=bucket).get('Uploads', [])]))",
        )
    }

    /// The pending uploads of `bucket` once none is left, or after two minutes (aborts run in the uploads'
    /// tasks, after the save has answered or the writer was dropped; a busy machine delays them).
    pub async fn settled_uploads(&self, bucket: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let pending = self.pending_uploads(bucket);
            if pending == "[]" || std::time::Instant::now() > deadline {
                return pending;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every key of `bucket`, as boto3 lists them.
    pub fn all_keys(&self, bucket: &str) -> String {
        self.boto3(
            bucket,
            "keys = []\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket):\n    \
             keys += [o['Key'] for o in page.get('Contents', [])]\nprint(json.dumps(sorted(keys)))",
        )
    }

    /// 32 concurrent large saves of one name, half from bytes and half from streams, through a proxy that holds
    /// their first 32 CompleteMultipartUploads and releases them at once: each save claims its name before
    /// completing there, so they keep 32 objects, each with its own content, and leave no claim, staging object
    /// or (where the server lists them: `lists_uploads`) pending upload.
    pub async fn race_large_saves(&self, lists_uploads: bool) {
        const MIB: usize = 1024 * 1024;
        // The first 32 CompleteMultipartUploads reach the server at once, through a proxy that holds them.
        let gate = proxy::Rule {
            method: "POST",
            target_contains: "uploadId=",
            occurrences: (1..=32).collect(),
            fault: proxy::Fault::Gate(32),
        };
        let gated = proxy::Proxy::start(&self.endpoint, vec![gate], None).await;
        let options = S3Options {
            multipart_threshold: 5 * MIB as u64,
            multipart_chunksize: 5 * MIB as u64,
            max_concurrency: 2,
            endpoint_url: Some(gated.endpoint.clone()),
            ..self.options()
        };
        let bucket = options.bucket_name.clone();
        let storage = std::sync::Arc::new(self.storage(options));
        let saves: Vec<_> = (0..32u8)
            .map(|i| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    let content = vec![i; 6 * MIB];
                    // Bytes go straight to their name; a one-shot stream through staging and a copy: both claim it.
                    let save = match i % 2 {
                        0 => storage_core::Content::from(content.clone()),
                        _ => storage_core::Content::from_reader(std::io::Cursor::new(content.clone())),
                    };
                    let name = storage.save("race/big.bin", save).await.expect("save");
                    (name, content)
                })
            })
            .collect();
        let mut saved = Vec::new();
        for save in saves {
            saved.push(save.await.expect("task"));
        }
        let mut names: Vec<&str> = saved.iter().map(|(name, _)| name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 32, "names given twice: {names:?}");
        for (name, content) in &saved {
            let read = storage.open(name).await.expect("open").read_all().await.expect("read");
            assert!(read == content[..], "{name} holds another save's content");
        }
        let keys = self.all_keys(&bucket);
        assert!(!keys.contains(".storages-staging"), "claims or staging objects left: {keys}");
        if lists_uploads {
            assert_eq!(self.settled_uploads(&bucket).await, "[]");
        }
    }

    /// A large object read whole comes as ranged GETs of `multipart_chunksize`, `max_concurrency` at once, in
    /// order and complete; the first of them is the GET `open` made. Small objects, partial ranges and
    /// `parallel_read_threshold = 0` stay one GET.
    pub async fn read_large_objects_in_ranges(&self) {
        use futures::TryStreamExt;
        const MIB: usize = 1024 * 1024;
        let options = S3Options {
            multipart_chunksize: 5 * MIB as u64,
            parallel_read_threshold: 8 * MIB as u64,
            max_concurrency: 3,
            ..self.options()
        };
        let storage = self.storage(options.clone());
        let content = storage_testkit::Blob { len: 23 * MIB + 7, seed: 23 }.bytes();
        storage.save("big.bin", content.clone().into()).await.expect("save");
        storage.save("small.bin", vec![7u8; 7 * MIB].into()).await.expect("save");
        let gets = |storage: &S3Storage| {
            storage.request_counts().into_iter().find(|(kind, _)| kind == "GET").map_or(0, |(_, n)| n)
        };

        let before = gets(&storage);
        let file = storage.open("big.bin").await.expect("open");
        let chunks: Vec<bytes::Bytes> = file.chunks(MIB).try_collect().await.expect("chunks");
        assert_eq!(chunks.len(), 24);
        assert!(chunks[..23].iter().all(|c| c.len() == MIB) && chunks[23].len() == 7, "chunks of 1 MiB");
        assert!(chunks.concat() == content[..], "the chunks hold the object, in order");
        assert_eq!(gets(&storage) - before, 5, "open's GET and 4 ranged GETs of 5 MiB");
        // The same handle again: open's response is used up, so 5 ranged GETs.
        assert!(file.read_all().await.expect("read_all") == content[..]);
        assert_eq!(gets(&storage) - before, 10);
        let part = file.range(3..(7 * MIB as u64)).await.expect("range");
        assert!(part[..] == content[3..7 * MIB], "a partial range");
        assert_eq!(gets(&storage) - before, 11, "a partial range is one GET");

        let before = gets(&storage);
        let small = storage.open("small.bin").await.expect("open").read_all().await.expect("read");
        assert!(small.len() == 7 * MIB && small.iter().all(|&b| b == 7));
        assert_eq!(gets(&storage) - before, 1, "under the threshold: one GET");

        let one_stream = self.storage(S3Options { parallel_read_threshold: 0, ..options });
        let read = one_stream.open("big.bin").await.expect("open").read_all().await.expect("read");
        assert!(read == content[..]);
        assert_eq!(gets(&one_stream), 1, "parallel_read_threshold = 0: one GET");
    }

    /// MD5s a storage recorded show in later listings (of a new storage, as in another process) for objects
    /// whose listing shows none (multipart objects; everything on a server that lists no ETag), and stop showing
    /// once another writer replaces the object. `etags_listed`: the server lists ETags, so a replacement of the
    /// same size is seen; without them only the size and time tell, and the time may be the same second.
    pub async fn recorded_md5s_hold_until_the_object_changes(&self, etags_listed: bool) {
        use storage_core::{FileMeta, Local};
        const MIB: usize = 1024 * 1024;
        let options =
            S3Options { multipart_threshold: 5 * MIB as u64, multipart_chunksize: 5 * MIB as u64, ..self.options() };
        let storage = self.storage(options.clone());
        let big = storage_testkit::Blob { len: 6 * MIB, seed: 1 }.bytes();
        let small = b"a small file".to_vec();
        storage.save("big.bin", big.clone().into()).await.expect("save");
        storage.save("dir/small.txt", small.clone().into()).await.expect("save");
        let md5 = |bytes: &[u8]| {
            use md5::Digest;
            hex::encode(md5::Md5::digest(bytes))
        };
        let meta = |name: &str, bytes: &[u8]| FileMeta {
            name: name.into(),
            size: bytes.len() as u64,
            md5: Some(md5(bytes)),
            ..FileMeta::default()
        };
        storage.record_md5s(&[meta("big.bin", &big), meta("dir/small.txt", &small)]).await.expect("record");
        let listed = |storage: S3Storage| async move {
            let files = storage.list_files("").await.expect("list");
            files.into_iter().map(|f| (f.name.clone(), f)).collect::<std::collections::BTreeMap<_, _>>()
        };

        let fresh = self.storage(options.clone());
        let held = listed(fresh.clone()).await;
        assert_eq!(held.keys().collect::<Vec<_>>(), ["big.bin", "dir/small.txt"], "the record is no file");
        let (dirs, files) = fresh.listdir("").await.expect("listdir");
        assert_eq!((dirs, files), (vec!["dir".to_string()], vec!["big.bin".to_string()]), "nor in listdir");
        assert_eq!(held["big.bin"].md5, Some(md5(&big)), "{:?}", held["big.bin"]);
        assert_eq!(held["dir/small.txt"].md5, Some(md5(&small)));
        let size = big.len() as u64;
        assert!(fresh.holds(&held["big.bin"], Local::Bytes(&big), &md5(&big), size).await.expect("holds"));
        let counts = fresh.request_counts();
        assert!(counts.iter().all(|(kind, n)| kind == "LIST" || (kind == "GET" && *n <= 1)), "{counts:?}");

        let other = storage_testkit::Blob { len: if etags_listed { 6 * MIB } else { 6 * MIB + 1 }, seed: 2 }.bytes();
        self.storage(options.clone()).replace("big.bin", other.clone().into()).await.expect("another writer");
        let fresh = self.storage(options.clone());
        let held = listed(fresh.clone()).await;
        assert_ne!(held["big.bin"].md5, Some(md5(&big)), "a replaced object keeps no recorded MD5");
        let big_size = big.len() as u64;
        assert!(!fresh.holds(&held["big.bin"], Local::Bytes(&big), &md5(&big), big_size).await.expect("holds"));
        assert_eq!(held["dir/small.txt"].md5, Some(md5(&small)), "the others keep theirs");

        // Another writer replaces a file between this storage's save and its record (two deploys at once):
        // the record must not give this storage's MD5 to the other writer's object.
        storage.replace("race.bin", big.clone().into()).await.expect("replace");
        let same_size = storage_testkit::Blob { len: big.len(), seed: 3 }.bytes();
        self.storage(options.clone()).replace("race.bin", same_size.clone().into()).await.expect("another writer");
        storage.record_md5s(&[meta("race.bin", &big)]).await.expect("record");
        let held = listed(self.storage(options)).await;
        assert_ne!(held["race.bin"].md5, Some(md5(&big)), "{:?}", held["race.bin"]);
    }
}
