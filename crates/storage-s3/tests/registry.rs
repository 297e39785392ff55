//! With storage-s3 linked, the registry holds exactly the linked backends, with the S3 aliases.

use storage_s3 as _;

#[test]
fn exactly_the_linked_backends_are_registered() {
    assert_eq!(
        storage_core::registered_paths().expect("registry"),
        ["storages.backends.memory.InMemoryStorage", "storages.backends.s3.S3Storage"]
    );
    let s3 = storage_core::registered_backends()
        .expect("registry")
        .into_iter()
        .find(|b| b.path == "storages.backends.s3.S3Storage")
        .expect("s3");
    assert_eq!(
        s3.aliases,
        [
            "storages.backends.s3boto.S3BotoStorage",
            "storages.backends.s3boto3.S3Boto3Storage",
            "storages.backends.s3.S3StaticStorage",
            "storages.backends.s3boto3.S3StaticStorage",
            "storages.backends.s3.S3ManifestStaticStorage",
            "storages.backends.s3boto3.S3ManifestStaticStorage",
        ]
    );
}
