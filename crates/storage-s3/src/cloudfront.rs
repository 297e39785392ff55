//! CloudFront signed URLs with a canned policy, byte for byte as botocore's `CloudFrontSigner` makes them for
//! django-storages (`AWS_CLOUDFRONT_KEY_ID`, `AWS_CLOUDFRONT_KEY`): RSA PKCS#1 v1.5 over SHA-1 of the policy,
//! in CloudFront's URL-safe base64.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha1::Sha1;

/// A CloudFront key pair's id and private key.
pub(crate) struct CloudFrontSigner {
    key_id: String,
    key: SigningKey<Sha1>,
}

impl std::fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudFrontSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl CloudFrontSigner {
    /// The signer of `key_id` with the PEM private key `pem` (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    /// The error never repeats the key.
    pub(crate) fn new(key_id: &str, pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| "is not an RSA private key in PEM (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)".to_owned())?;
        Ok(CloudFrontSigner { key_id: key_id.to_owned(), key: SigningKey::<Sha1>::new(key) })
    }

    /// `url` signed with a canned policy, valid until `expires` (seconds since the Unix epoch): `url` with
    /// `Expires`, `Signature` and `Key-Pair-Id` added to its query.
    pub(crate) fn sign(&self, url: &str, expires: u64) -> String {
        // botocore's json.dumps(separators=(',', ':')): no whitespace, keys in this order.
        let resource = serde_json::to_string(url).unwrap_or_else(|_| format!("\"{url}\""));
        let policy = format!(
            r#"{{"Statement":[{{"Resource":{resource},"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
        );
        let signature = crate::protocol::base64_encode(&self.key.sign(policy.as_bytes()).to_bytes());
        let signature = signature.replace('+', "-").replace('=', "_").replace('/', "~");
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}Expires={expires}&Signature={signature}&Key-Pair-Id={}", self.key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key, URL, time and signed URL of django-storages' `test_storage_url_custom_domain_signed_urls`.
    const PEM: &str = include_str!("../tests/data/cloudfront-test-key.pem");

    #[test]
    fn the_signed_url_is_django_storages_test_vector() {
        let signer = CloudFrontSigner::new("test-key", PEM).expect("the test key");
        let expected = "https://mock.cloudfront.net/file.txt?Expires=3600&Signature=DbqVgh3FHtttQxof214tSAVE8Nqn3Q4Ii7eR3iykbOqAPbV\
            89HC3EB~0CWxarpLNtbfosS5LxiP5EutriM7E8uR4Gm~UVY-PFUjPcwqdnmAiKJF0EVs7koJc\
            MR8MKDStuWfFKVUPJ8H7ORYTOrixyHBV2NOrpI6SN5UX6ctNM50_&Key-Pair-Id=test-key";
        // django-storages' test: now is the epoch, the URL valid for the default 3600 seconds.
        assert_eq!(signer.sign("https://mock.cloudfront.net/file.txt", 3600), expected);
        let with_query = signer.sign("https://mock.cloudfront.net/file.txt?version=10", 3600);
        assert!(with_query.starts_with("https://mock.cloudfront.net/file.txt?version=10&Expires=3600&Signature="));
    }

    #[test]
    fn a_key_that_is_no_rsa_key_is_refused_without_being_repeated() {
        let error =
            CloudFrontSigner::new("id", "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----")
                .expect_err("not a key");
        assert!(error.contains("is not an RSA private key") && !error.contains("c2VjcmV0"), "{error}");
        assert!(!format!("{:?}", CloudFrontSigner::new("id", PEM).expect("key")).contains("MIIC"));
    }
}
