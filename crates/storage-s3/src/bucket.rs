//! Bucket-level requests object_store does not make: does the bucket exist, and CreateBucket.

use crate::Inner;
use http::{HeaderMap, Method, StatusCode};
use object_store::client::{HttpRequestBody, HttpResponse};
use storage_core::{Error, Result};

impl Inner {
    /// Checks once that the bucket exists, creating it with `auto_create_bucket`.
    pub(crate) async fn ensure_bucket(&self) -> Result<()> {
        let response = self.bucket_request(Method::HEAD, HttpRequestBody::empty()).await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::NOT_FOUND if self.options.auto_create_bucket => self.create_bucket().await,
            StatusCode::NOT_FOUND => Err(self.bucket_error(format!(
                "bucket '{}' does not exist at {} (set auto_create_bucket = true to create it)",
                self.options.bucket_name, self.endpoint
            ))),
            // Wrong credentials, or credentials allowed to use objects but not to look at the bucket: the
            // requests that follow tell which.
            StatusCode::FORBIDDEN => Ok(()),
            StatusCode::MOVED_PERMANENTLY | StatusCode::BAD_REQUEST => Err(self.bucket_error(format!(
                "bucket '{}' at {} answered {}: is region_name ('{}') the bucket's region?",
                self.options.bucket_name,
                self.endpoint,
                response.status(),
                self.options.region_name
            ))),
            status => Err(self.bucket_error(format!(
                "checking bucket '{}' at {} failed with {status}",
                self.options.bucket_name, self.endpoint
            ))),
        }
    }

    async fn create_bucket(&self) -> Result<()> {
        let body = if self.options.region_name == "us-east-1" {
            HttpRequestBody::empty()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.options.region_name
            )
            .into()
        };
        let response = self.bucket_request(Method::PUT, body).await?;
        let status = response.status();
        let text =
            response.into_body().bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        if status.is_success() || text.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(self.bucket_error(format!(
            "creating bucket '{}' at {} failed with {status}: {}",
            self.options.bucket_name,
            self.endpoint,
            s3_error_code(&text)
        )))
    }

    async fn bucket_request(&self, method: Method, body: HttpRequestBody) -> Result<HttpResponse> {
        self.signed_request(method, &self.bucket_url, HeaderMap::new(), body).await.map_err(|e| self.bucket_error(e))
    }

    fn bucket_error(&self, message: String) -> Error {
        Error::Backend {
            storage: self.alias.clone(),
            operation: "check the bucket",
            name: String::new(),
            message,
            source: None,
        }
    }
}

/// The `<Code>` of an S3 error document, or the document itself when it has none.
pub(crate) fn s3_error_code(body: &str) -> &str {
    body.split_once("<Code>").and_then(|(_, rest)| rest.split_once("</Code>")).map_or(body, |(code, _)| code)
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
